package dockerfile

import (
	"encoding/json"
	"fmt"
	"maps"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/bangerdev/banger/internal/errkind"
)

// Config is the image configuration a build produces (the OCI config
// fields banger keeps).
type Config struct {
	Env        []string          `json:"env,omitempty"`
	WorkingDir string            `json:"working_dir,omitempty"`
	User       string            `json:"user,omitempty"`
	Entrypoint []string          `json:"entrypoint,omitempty"`
	Cmd        []string          `json:"cmd,omitempty"`
	Labels     map[string]string `json:"labels,omitempty"`
}

// StepKind is what a filesystem step does.
type StepKind string

// Step kinds. Instructions that only change the configuration (ENV, ARG,
// LABEL, USER, CMD, ENTRYPOINT) produce no step.
const (
	StepRun   StepKind = "run"   // RUN
	StepCopy  StepKind = "copy"  // COPY and ADD
	StepMkdir StepKind = "mkdir" // WORKDIR
)

// Step is one instruction that changes the filesystem, fully resolved.
type Step struct {
	// Line is the Dockerfile line of the instruction.
	Line int `json:"-"`
	// Text is the instruction as written (for logs).
	Text string    `json:"-"`
	Kind StepKind  `json:"kind"`
	Run  *RunStep  `json:"run,omitempty"`
	Copy *CopyStep `json:"copy,omitempty"`
	// Dir is the directory a WORKDIR step creates.
	Dir string `json:"dir,omitempty"`
}

// RunStep is a RUN instruction: Argv runs as User in Cwd with Env.
type RunStep struct {
	Argv []string `json:"argv"`
	Env  []string `json:"env"`
	Cwd  string   `json:"cwd"`
	User string   `json:"user,omitempty"`
	// ProxyEnv holds the predefined proxy build arguments (http_proxy …):
	// passed to the process, but, as in Docker, not part of the cache key.
	ProxyEnv []string `json:"-"`
}

// CopyStep is a COPY or ADD instruction.
type CopyStep struct {
	// Add enables ADD's extraction of local tar archives.
	Add bool `json:"add,omitempty"`
	// Sources are slash-separated paths relative to the build context root
	// (cleaned, never leaving it); they may hold wildcards.
	Sources []string `json:"sources"`
	// Dest is the absolute destination in the image; a trailing slash means
	// a directory.
	Dest string `json:"dest"`
	// Chown is user[:group] (names or ids) as written; empty means 0:0.
	Chown string `json:"chown,omitempty"`
	// Chmod is the octal mode given with --chmod, or -1.
	Chmod int64 `json:"chmod"`
}

// Key is the canonical encoding of the resolved step that the build cache
// hashes: everything that determines its effect, nothing else.
func (s Step) Key() string {
	b, _ := json.Marshal(s)
	return string(b)
}

// Plan is a resolved Dockerfile.
type Plan struct {
	// Base is the FROM reference after substitution.
	Base  string
	Steps []Step
	// Config is the image configuration after the last instruction.
	Config Config
	// UnusedArgs are build arguments that no ARG declared.
	UnusedArgs []string
}

// proxyArgs are predefined: usable without an ARG instruction.
var proxyArgs = map[string]bool{
	"HTTP_PROXY": true, "http_proxy": true, "HTTPS_PROXY": true, "https_proxy": true,
	"FTP_PROXY": true, "ftp_proxy": true, "NO_PROXY": true, "no_proxy": true,
	"ALL_PROXY": true, "all_proxy": true,
}

// metaArgs evaluates the ARGs before FROM.
func (d *Dockerfile) metaArgs(buildArgs map[string]string, used map[string]bool) (map[string]string, error) {
	vals := map[string]string{}
	lookup := func(n string) (string, bool) { v, ok := vals[n]; return v, ok }
	for _, in := range d.MetaArgs {
		if err := declareArgs(in, d.Escape, buildArgs, lookup, used, func(name, val string, set bool) {
			if set {
				vals[name] = val
			}
		}); err != nil {
			return nil, err
		}
	}
	return vals, nil
}

// BaseRef returns the FROM reference after substituting the ARGs declared
// before FROM.
func (d *Dockerfile) BaseRef(buildArgs map[string]string) (string, error) {
	meta, err := d.metaArgs(buildArgs, map[string]bool{})
	if err != nil {
		return "", err
	}
	return d.baseRef(meta)
}

func (d *Dockerfile) baseRef(meta map[string]string) (string, error) {
	in := d.From
	for _, f := range in.Flags {
		if f.Name == "platform" {
			p, err := expand(f.Value, mapLookup(meta), d.Escape)
			if err != nil {
				return "", lineError(in.Line, "FROM --platform: %v", err)
			}
			if p != "linux/amd64" && p != "linux/x86_64" && p != "$BUILDPLATFORM" && p != "$TARGETPLATFORM" {
				return "", lineError(in.Line, "FROM --platform=%s: banger builds linux/amd64 only", p)
			}
		}
	}
	switch {
	case len(in.Args) == 3 && strings.EqualFold(in.Args[1], "AS"):
	case len(in.Args) != 1:
		return "", lineError(in.Line, "FROM wants an image reference (optionally followed by AS name)")
	}
	ref, err := expand(in.Args[0], mapLookup(meta), d.Escape)
	if err != nil {
		return "", lineError(in.Line, "FROM: %v", err)
	}
	if ref == "" {
		return "", lineError(in.Line, "FROM: the image reference is empty after substitution")
	}
	if ref == "scratch" {
		return "", lineError(in.Line, "FROM scratch is not supported: a build needs a base image that boots")
	}
	return ref, nil
}

func mapLookup(m map[string]string) Lookup {
	return func(n string) (string, bool) { v, ok := m[n]; return v, ok }
}

// declareArgs evaluates one ARG instruction: each name takes the build
// argument's value, else its default, else stays unset.
func declareArgs(in Instruction, escape byte, buildArgs map[string]string, lookup Lookup, used map[string]bool, set func(name, val string, isSet bool)) error {
	if len(in.Args) == 0 {
		return lineError(in.Line, "ARG wants a name")
	}
	for _, w := range in.Args {
		name, def, hasDef := strings.Cut(w, "=")
		if !validName(name) {
			return lineError(in.Line, "ARG: invalid name %q", name)
		}
		val, isSet := "", false
		if hasDef {
			v, err := expand(def, lookup, escape)
			if err != nil {
				return lineError(in.Line, "ARG %s: %v", name, err)
			}
			val, isSet = v, true
		}
		if v, ok := buildArgs[name]; ok {
			val, isSet = v, true
			used[name] = true
		}
		set(name, val, isSet)
	}
	return nil
}

func validName(n string) bool {
	if n == "" {
		return false
	}
	for i := 0; i < len(n); i++ {
		if !isNameChar(n[i], i == 0) {
			return false
		}
	}
	return true
}

// env is an ordered environment (KEY=VALUE, last write wins in place).
type env []string

func (e env) get(k string) (string, bool) {
	for _, kv := range e {
		if n, v, _ := strings.Cut(kv, "="); n == k {
			return v, true
		}
	}
	return "", false
}

func (e env) set(k, v string) env {
	for i, kv := range e {
		if n, _, _ := strings.Cut(kv, "="); n == k {
			e[i] = k + "=" + v
			return e
		}
	}
	return append(e, k+"="+v)
}

// Plan resolves the instructions after FROM against the base image's
// configuration and the build arguments (--build-arg K=V).
func (d *Dockerfile) Plan(base Config, buildArgs map[string]string) (*Plan, error) {
	used := map[string]bool{}
	meta, err := d.metaArgs(buildArgs, used)
	if err != nil {
		return nil, err
	}
	ref, err := d.baseRef(meta)
	if err != nil {
		return nil, err
	}
	cfg := Config{
		Env:        slices.Clone(base.Env),
		WorkingDir: base.WorkingDir,
		User:       base.User,
		Entrypoint: slices.Clone(base.Entrypoint),
		Cmd:        slices.Clone(base.Cmd),
		Labels:     maps.Clone(base.Labels),
	}
	if cfg.WorkingDir == "" {
		cfg.WorkingDir = "/"
	}
	p := &Plan{Base: ref}
	var args env // ARG values in scope, in declaration order
	declared := map[string]bool{}
	cmdSet := false
	// ENV overrides ARG in substitution, as in Docker.
	lookup := func(n string) (string, bool) {
		if v, ok := env(cfg.Env).get(n); ok {
			return v, true
		}
		return args.get(n)
	}
	exp := func(in Instruction, w string) (string, error) {
		v, err := expand(w, lookup, d.Escape)
		if err != nil {
			return "", lineError(in.Line, "%s: %v", in.Keyword, err)
		}
		return v, nil
	}
	for _, in := range d.Instructions {
		text := in.Keyword + " " + in.Text
		switch in.Keyword {
		case "ARG":
			err := declareArgs(in, d.Escape, buildArgs, lookup, used, func(name, val string, isSet bool) {
				declared[name] = true
				if !isSet {
					if mv, ok := meta[name]; ok {
						val, isSet = mv, true
					}
				}
				if isSet {
					args = args.set(name, val)
				}
			})
			if err != nil {
				return nil, err
			}
		case "ENV", "LABEL":
			pairs, err := keyValues(in, exp)
			if err != nil {
				return nil, err
			}
			for _, kv := range pairs {
				if in.Keyword == "ENV" {
					cfg.Env = env(cfg.Env).set(kv[0], kv[1])
					continue
				}
				if cfg.Labels == nil {
					cfg.Labels = map[string]string{}
				}
				cfg.Labels[kv[0]] = kv[1]
			}
		case "USER":
			if len(in.Args) != 1 {
				return nil, lineError(in.Line, "USER wants exactly one user[:group]")
			}
			u, err := exp(in, in.Args[0])
			if err != nil {
				return nil, err
			}
			cfg.User = u
		case "WORKDIR":
			if len(in.Args) != 1 {
				return nil, lineError(in.Line, "WORKDIR wants exactly one path")
			}
			w, err := exp(in, in.Args[0])
			if err != nil {
				return nil, err
			}
			if w == "" {
				return nil, lineError(in.Line, "WORKDIR is empty after substitution")
			}
			if !path.IsAbs(w) {
				w = path.Join(cfg.WorkingDir, w)
			}
			cfg.WorkingDir = path.Clean(w)
			p.Steps = append(p.Steps, Step{Line: in.Line, Text: text, Kind: StepMkdir, Dir: cfg.WorkingDir})
		case "CMD", "ENTRYPOINT":
			argv := shellOrExec(in)
			if in.Keyword == "CMD" {
				cfg.Cmd, cmdSet = argv, true
			} else {
				cfg.Entrypoint = argv
				if !cmdSet {
					cfg.Cmd = nil // ENTRYPOINT resets an inherited CMD
				}
			}
		case "RUN":
			if len(in.Args) == 0 {
				return nil, lineError(in.Line, "RUN wants a command")
			}
			rs := &RunStep{Argv: shellOrExec(in), Env: slices.Clone(cfg.Env), Cwd: cfg.WorkingDir, User: cfg.User}
			for _, kv := range args {
				k, v, _ := strings.Cut(kv, "=")
				if _, ok := env(rs.Env).get(k); !ok {
					rs.Env = append(rs.Env, k+"="+v)
				}
			}
			for _, k := range slices.Sorted(maps.Keys(buildArgs)) {
				if proxyArgs[k] && !declared[k] {
					rs.ProxyEnv = append(rs.ProxyEnv, k+"="+buildArgs[k])
					used[k] = true
				}
			}
			p.Steps = append(p.Steps, Step{Line: in.Line, Text: text, Kind: StepRun, Run: rs})
		case "COPY", "ADD":
			cs, err := copyStep(in, cfg.WorkingDir, exp, lookup)
			if err != nil {
				return nil, err
			}
			p.Steps = append(p.Steps, Step{Line: in.Line, Text: text, Kind: StepCopy, Copy: cs})
		default:
			return nil, lineError(in.Line, "unexpected %s", in.Keyword)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(buildArgs)) {
		if !used[k] {
			p.UnusedArgs = append(p.UnusedArgs, k)
		}
	}
	p.Config = cfg
	return p, nil
}

// shellOrExec returns the argv of a RUN, CMD or ENTRYPOINT instruction.
func shellOrExec(in Instruction) []string {
	if in.JSON {
		return slices.Clone(in.Args)
	}
	return []string{"/bin/sh", "-c", in.Text}
}

// keyValues parses the pairs of ENV and LABEL: key=value words, or the
// legacy "key value..." form (one pair, the value is the rest of the line).
func keyValues(in Instruction, exp func(Instruction, string) (string, error)) ([][2]string, error) {
	if len(in.Args) == 0 {
		return nil, lineError(in.Line, "%s wants key=value pairs", in.Keyword)
	}
	if !strings.Contains(in.Args[0], "=") {
		if len(in.Args) < 2 {
			return nil, lineError(in.Line, "%s %s: missing value", in.Keyword, in.Args[0])
		}
		k, err := exp(in, in.Args[0])
		if err != nil {
			return nil, err
		}
		_, rest := cutSpace(in.Text)
		v, err := exp(in, rest)
		if err != nil {
			return nil, err
		}
		if in.Keyword == "ENV" && !validName(k) {
			return nil, lineError(in.Line, "ENV: invalid name %q", k)
		}
		return [][2]string{{k, v}}, nil
	}
	var out [][2]string
	for _, w := range in.Args {
		kv, err := exp(in, w)
		if err != nil {
			return nil, err
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, lineError(in.Line, "%s: %q is not key=value", in.Keyword, w)
		}
		if k == "" || (in.Keyword == "ENV" && !validName(k)) {
			return nil, lineError(in.Line, "%s: invalid name %q", in.Keyword, k)
		}
		out = append(out, [2]string{k, v})
	}
	return out, nil
}

func copyStep(in Instruction, workdir string, exp func(Instruction, string) (string, error), expLookup Lookup) (*CopyStep, error) {
	cs := &CopyStep{Add: in.Keyword == "ADD", Chmod: -1}
	for _, f := range in.Flags {
		switch f.Name {
		case "from":
			return nil, lineError(in.Line, "COPY --from is not supported (multi-stage builds are not supported)")
		case "link":
		case "chown":
			v, err := exp(in, f.Value)
			if err != nil {
				return nil, err
			}
			if v == "" {
				return nil, lineError(in.Line, "%s --chown wants user[:group]", in.Keyword)
			}
			cs.Chown = v
		case "chmod":
			v, err := exp(in, f.Value)
			if err != nil {
				return nil, err
			}
			m, err := strconv.ParseInt(v, 8, 32)
			if err != nil || m < 0 || m > 0o7777 {
				return nil, lineError(in.Line, "%s --chmod=%s: want an octal mode", in.Keyword, v)
			}
			cs.Chmod = m
		}
	}
	words := in.Args
	if len(words) < 2 {
		return nil, lineError(in.Line, "%s wants at least one source and a destination", in.Keyword)
	}
	var vals []string
	for _, w := range words {
		var v string
		var err error
		if in.JSON {
			v, err = expandLiteral(w, expLookup)
			if err != nil {
				err = lineError(in.Line, "%s: %v", in.Keyword, err)
			}
		} else {
			v, err = exp(in, w)
		}
		if err != nil {
			return nil, err
		}
		vals = append(vals, v)
	}
	dest := vals[len(vals)-1]
	if dest == "" {
		return nil, lineError(in.Line, "%s: empty destination", in.Keyword)
	}
	dir := strings.HasSuffix(dest, "/") || dest == "." || strings.HasSuffix(dest, "/.")
	if !path.IsAbs(dest) {
		dest = path.Join(workdir, dest)
	}
	dest = path.Clean(dest)
	if dir && dest != "/" {
		dest += "/"
	}
	cs.Dest = dest
	for _, src := range vals[:len(vals)-1] {
		if strings.Contains(src, "://") || strings.HasPrefix(src, "git@") {
			return nil, errkind.WithHint(lineError(in.Line, "%s from a URL (%s) is not supported", in.Keyword, src),
				"download it in a RUN step (the build VM has the host's network), or put it in the build context")
		}
		c := path.Clean("/" + src)[1:]
		if rel := path.Clean(src); rel == ".." || strings.HasPrefix(rel, "../") {
			return nil, lineError(in.Line, "%s source %q is outside the build context", in.Keyword, src)
		}
		if c == "" {
			c = "."
		}
		cs.Sources = append(cs.Sources, c)
	}
	return cs, nil
}

// String summarises a step for logs.
func (s Step) String() string {
	return fmt.Sprintf("line %d: %s", s.Line, s.Text)
}
