package imagepull

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
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
	cmd     *exec.Cmd
	out     io.ReadCloser
	src     io.Closer
	stderr  *bytes.Buffer
	feedErr chan error // the copy into stdin (nil when igzip reads a file)
	once    sync.Once
	werr    error
}

// startIgzip runs igzip over src. A regular file is handed to igzip as its
// stdin; anything else (a download still in progress) is copied in through
// a pipe. Both pipes get 1 MiB buffers to cut the wake-ups between the
// processes.
func startIgzip(bin string, src io.ReadCloser, br *bufio.Reader) (io.ReadCloser, error) {
	cmd := exec.Command(bin, "-d", "-c")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	z := &igzipReader{src: src, feedErr: make(chan error, 1)}
	var feed func() // copies src into igzip's stdin, if needed
	if f, ok := src.(*os.File); ok && isRegular(f) {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return nil, fmt.Errorf("rewinding layer: %w", err)
		}
		cmd.Stdin = f
	} else {
		inR, inW, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		growPipe(inW)
		cmd.Stdin = inR
		feed = func() {
			_, err := io.Copy(inW, br)
			inW.Close()
			z.feedErr <- err
		}
		defer inR.Close()
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	growPipe(outR)
	cmd.Stdout = outW
	err = cmd.Start()
	outW.Close()
	if err != nil {
		outR.Close()
		return nil, fmt.Errorf("starting igzip: %w", err)
	}
	z.cmd, z.out, z.stderr = cmd, outR, &stderr
	if feed != nil {
		go feed()
	} else {
		z.feedErr <- nil
	}
	return z, nil
}

func isRegular(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode().IsRegular()
}

// growPipe enlarges a pipe's buffer to 1 MiB (best effort).
func growPipe(f *os.File) {
	_, _ = unix.FcntlInt(f.Fd(), unix.F_SETPIPE_SZ, 1<<20)
}

func (z *igzipReader) wait() error {
	z.once.Do(func() {
		err := z.cmd.Wait()
		if ferr := <-z.feedErr; ferr != nil {
			z.werr = fmt.Errorf("reading gzip layer: %w", ferr)
			return
		}
		if err != nil {
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
