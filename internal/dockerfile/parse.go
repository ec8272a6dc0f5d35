// Package dockerfile parses the subset of the Dockerfile language that
// `banger image build` executes, and resolves it (variable substitution,
// build arguments, working directory, user) into a plan of filesystem steps
// plus the resulting image configuration.
//
// Supported: FROM (one stage), RUN (shell and exec form), COPY and ADD
// (--chown, --chmod, several sources, wildcards), ENV and LABEL (key=value
// pairs and the legacy "key value" form), ARG (with defaults), WORKDIR,
// USER, CMD and ENTRYPOINT (recorded as metadata), line continuations,
// comments, and the escape parser directive (other directives are
// ignored). Heredocs, multi-stage builds and every other instruction are
// refused with the line they appear on.
package dockerfile

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"unicode"

	"github.com/bangerdev/banger/internal/errkind"
)

// Instruction is one logical line of a Dockerfile.
type Instruction struct {
	// Line is the physical line the instruction starts on (1-based).
	Line int
	// Keyword is the instruction name, upper-case ("RUN").
	Keyword string
	// Flags are the leading --name[=value] options, in order.
	Flags []Flag
	// JSON reports the exec form: Args are the elements of a JSON array.
	JSON bool
	// Args are the words after the flags (shell-quoted, not yet expanded)
	// or, with JSON, the array elements.
	Args []string
	// Text is everything after the flags, continuations joined; the shell
	// form command of RUN, CMD and ENTRYPOINT.
	Text string
}

// Flag is a --name=value option of an instruction.
type Flag struct {
	Name  string
	Value string
	// HasValue distinguishes --flag from --flag=.
	HasValue bool
}

// Dockerfile is a parsed file: the ARGs declared before FROM, the FROM
// instruction, and everything after it.
type Dockerfile struct {
	MetaArgs     []Instruction
	From         Instruction
	Instructions []Instruction
	// Escape is the escape character (\\ unless the escape directive says `).
	Escape byte
}

// supported lists the instructions banger executes.
var supported = map[string]bool{
	"FROM": true, "RUN": true, "COPY": true, "ADD": true, "ENV": true, "ARG": true,
	"WORKDIR": true, "USER": true, "LABEL": true, "CMD": true, "ENTRYPOINT": true,
}

// known lists the other Dockerfile instructions, refused with a clearer
// message than "unknown".
var known = map[string]bool{
	"EXPOSE": true, "VOLUME": true, "SHELL": true, "STOPSIGNAL": true, "HEALTHCHECK": true,
	"ONBUILD": true, "MAINTAINER": true,
}

// flagsAllowed lists the options each instruction accepts.
var flagsAllowed = map[string]map[string]bool{
	"FROM": {"platform": true},
	"COPY": {"chown": true, "chmod": true, "link": true, "from": true},
	"ADD":  {"chown": true, "chmod": true, "link": true},
}

// lineError is a parse error at a line.
func lineError(line int, format string, args ...any) error {
	return errkind.New(errkind.InvalidArgument, "line %d: %s", line, fmt.Sprintf(format, args...))
}

// Parse reads a Dockerfile. Errors name the line and are InvalidArgument.
func Parse(r io.Reader) (*Dockerfile, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("reading dockerfile: %w", err)
	}
	instrs, escape, err := parseInstructions(data)
	if err != nil {
		return nil, err
	}
	df := &Dockerfile{Escape: escape}
	seenFrom := false
	for _, in := range instrs {
		switch {
		case in.Keyword == "FROM" && seenFrom:
			return nil, errkind.WithHint(lineError(in.Line, "a second FROM: multi-stage builds are not supported"),
				"build each stage as its own image and start the next from it")
		case in.Keyword == "FROM":
			seenFrom = true
			df.From = in
		case !seenFrom && in.Keyword == "ARG":
			df.MetaArgs = append(df.MetaArgs, in)
		case !seenFrom:
			return nil, lineError(in.Line, "%s before FROM (only ARG may come before FROM)", in.Keyword)
		default:
			df.Instructions = append(df.Instructions, in)
		}
	}
	if !seenFrom {
		return nil, errkind.New(errkind.InvalidArgument, "dockerfile has no FROM instruction")
	}
	return df, nil
}

// logicalLine is an instruction's text with the line it starts on.
type logicalLine struct {
	line int
	text string
}

// parseInstructions splits data into instructions: parser directives,
// comments, blank lines and continuations are handled here.
func parseInstructions(data []byte) ([]Instruction, byte, error) {
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	escape := byte('\\')
	directives := true
	var lines []logicalLine
	var cur strings.Builder
	start, n := 0, 0
	inCont := false
	for sc.Scan() {
		n++
		raw := strings.TrimRight(sc.Text(), "\r")
		trimmed := strings.TrimSpace(raw)
		if directives {
			if k, v, ok := directive(trimmed); ok {
				if k == "escape" {
					if v != "\\" && v != "`" {
						return nil, 0, lineError(n, "invalid escape directive %q: want \\ or `", v)
					}
					escape = v[0]
				}
				continue // syntax, check and unknown directives are ignored
			}
			directives = false
		}
		if strings.HasPrefix(trimmed, "#") {
			continue // comments, also inside a continuation
		}
		if trimmed == "" {
			continue // blank lines, also inside a continuation
		}
		if !inCont {
			start = n
			cur.Reset()
		}
		body := strings.TrimRightFunc(raw, unicode.IsSpace)
		if strings.HasSuffix(body, string(escape)) && !endsEscaped(body, escape) {
			cur.WriteString(body[:len(body)-1])
			inCont = true
			continue
		}
		cur.WriteString(raw)
		inCont = false
		lines = append(lines, logicalLine{start, cur.String()})
	}
	if err := sc.Err(); err != nil {
		return nil, 0, fmt.Errorf("reading dockerfile: %w", err)
	}
	if inCont {
		lines = append(lines, logicalLine{start, cur.String()})
	}
	out := make([]Instruction, 0, len(lines))
	for _, l := range lines {
		in, err := parseLine(l, escape)
		if err != nil {
			return nil, 0, err
		}
		out = append(out, in)
	}
	return out, escape, nil
}

// endsEscaped reports whether the escape character at the end of s is
// itself escaped (an even run of escape characters).
func endsEscaped(s string, escape byte) bool {
	run := 0
	for i := len(s) - 1; i >= 0 && s[i] == escape; i-- {
		run++
	}
	return run%2 == 0
}

// directive recognises a parser directive line "# key=value".
func directive(line string) (key, value string, ok bool) {
	if !strings.HasPrefix(line, "#") {
		return "", "", false
	}
	body := strings.TrimSpace(line[1:])
	k, v, found := strings.Cut(body, "=")
	k = strings.ToLower(strings.TrimSpace(k))
	if !found || k == "" || strings.ContainsFunc(k, unicode.IsSpace) {
		return "", "", false
	}
	return k, strings.TrimSpace(v), true
}

func parseLine(l logicalLine, escape byte) (Instruction, error) {
	text := strings.TrimLeftFunc(l.text, unicode.IsSpace)
	kw, rest, _ := strings.Cut(text, " ")
	if i := strings.IndexFunc(kw, unicode.IsSpace); i >= 0 {
		kw, rest = kw[:i], kw[i:]+" "+rest
	}
	kw = strings.ToUpper(kw)
	rest = strings.TrimSpace(rest)
	in := Instruction{Line: l.line, Keyword: kw}
	switch {
	case known[kw]:
		return in, lineError(l.line, "%s is not supported by banger image build", kw)
	case !supported[kw]:
		return in, lineError(l.line, "unknown instruction %s", strings.ToUpper(firstWord(text)))
	}
	// Leading --flags.
	for strings.HasPrefix(rest, "--") {
		word, after := cutSpace(rest)
		name, value, has := strings.Cut(word[2:], "=")
		allowed := flagsAllowed[kw]
		if kw == "RUN" {
			return in, lineError(l.line, "RUN --%s is not supported", name)
		}
		if !allowed[name] {
			return in, lineError(l.line, "%s does not accept --%s", kw, name)
		}
		in.Flags = append(in.Flags, Flag{Name: name, Value: value, HasValue: has})
		rest = after
	}
	in.Text = rest
	switch kw {
	case "RUN", "CMD", "ENTRYPOINT", "COPY", "ADD":
		if strings.HasPrefix(rest, "[") {
			var arr []string
			if err := json.Unmarshal([]byte(rest), &arr); err == nil {
				in.JSON, in.Args = true, arr
				break
			}
		}
		if kw != "CMD" && kw != "ENTRYPOINT" && hasHeredoc(rest, escape) {
			return in, errkind.WithHint(lineError(l.line, "heredocs are not supported"),
				"put the script in a file of the build context and COPY it, or use RUN with && and continuations")
		}
		words, err := splitWords(rest, escape)
		if err != nil {
			return in, lineError(l.line, "%v", err)
		}
		in.Args = words
	default:
		words, err := splitWords(rest, escape)
		if err != nil {
			return in, lineError(l.line, "%v", err)
		}
		in.Args = words
	}
	return in, nil
}

func firstWord(s string) string {
	w, _ := cutSpace(s)
	return w
}

// cutSpace splits s at its first run of white space.
func cutSpace(s string) (string, string) {
	i := strings.IndexFunc(s, unicode.IsSpace)
	if i < 0 {
		return s, ""
	}
	return s[:i], strings.TrimLeftFunc(s[i:], unicode.IsSpace)
}

// hasHeredoc reports whether s holds "<<WORD" or "<<-WORD" (optionally
// quoted) outside quotes: the heredoc syntax of BuildKit.
func hasHeredoc(s string, escape byte) bool {
	var quote byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == escape && quote != '\'':
			i++
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '\'' || c == '"':
			quote = c
		case c == '<' && i+1 < len(s) && s[i+1] == '<':
			j := i + 2
			if j < len(s) && s[j] == '<' {
				i = j // <<< here-string, not a heredoc
				continue
			}
			if j < len(s) && s[j] == '-' {
				j++
			}
			for j < len(s) && (s[j] == ' ' || s[j] == '\t') {
				j++
			}
			if j < len(s) && (s[j] == '"' || s[j] == '\'') {
				j++
			}
			if j < len(s) && (s[j] == '_' || unicode.IsLetter(rune(s[j]))) {
				return true
			}
			i++
		}
	}
	return false
}
