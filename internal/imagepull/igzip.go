package imagepull

import (
	"bytes"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
)

// igzipPath returns the ISA-L igzip binary (Debian package isal) if
// installed. Its inflate is about three times faster than the best pure-Go
// one, and it runs in its own process, i.e. on another core.
func igzipPath() string {
	p, err := exec.LookPath("igzip")
	if err != nil {
		return ""
	}
	return p
}

// igzipReader streams `igzip -d -c` over r. At the end of the output it
// waits for the process and turns a failure (corrupt or truncated input)
// into an error instead of io.EOF.
type igzipReader struct {
	cmd    *exec.Cmd
	out    io.ReadCloser
	src    io.Closer
	stderr *bytes.Buffer
	once   sync.Once
	werr   error
}

func startIgzip(bin string, r io.ReadCloser, br io.Reader) (io.ReadCloser, error) {
	cmd := exec.Command(bin, "-d", "-c")
	cmd.Stdin = br
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting igzip: %w", err)
	}
	return &igzipReader{cmd: cmd, out: out, src: r, stderr: &stderr}, nil
}

func (z *igzipReader) wait() error {
	z.once.Do(func() {
		if err := z.cmd.Wait(); err != nil {
			msg := strings.TrimSpace(z.stderr.String())
			z.werr = fmt.Errorf("decompressing gzip layer (igzip): %w: %s", err, msg)
		}
	})
	return z.werr
}

func (z *igzipReader) Read(p []byte) (int, error) {
	n, err := z.out.Read(p)
	if err == io.EOF {
		if werr := z.wait(); werr != nil {
			return n, werr
		}
	}
	return n, err
}

// Close stops the process if it is still running and closes the source.
func (z *igzipReader) Close() error {
	if z.cmd.ProcessState == nil {
		_ = z.cmd.Process.Kill()
	}
	z.out.Close()
	z.wait()
	return z.src.Close()
}
