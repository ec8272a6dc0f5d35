package dockerfile

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/bangerdev/banger/internal/errkind"
)

func mustParse(t *testing.T, src string) *Dockerfile {
	t.Helper()
	df, err := Parse(strings.NewReader(src))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return df
}

func TestParseEveryInstruction(t *testing.T) {
	src := `# syntax=docker/dockerfile:1
# check=skip=all
ARG BASE=busybox
FROM ${BASE}:latest AS build
RUN echo hi > /x
RUN ["/bin/echo", "exec form"]
COPY --chown=1000:1000 a.txt b.txt /dst/
ADD --chmod=0755 tool.tar.gz /opt/
ENV A=1 B="two words"
ENV LEGACY some value here
ARG VERSION=1.0
WORKDIR /app
USER nobody
LABEL org.example.a=x "b c"=d
CMD ["sh", "-c", "echo cmd"]
ENTRYPOINT /entry.sh
`
	df := mustParse(t, src)
	if df.Escape != '\\' {
		t.Errorf("escape = %q", df.Escape)
	}
	if len(df.MetaArgs) != 1 || df.MetaArgs[0].Args[0] != "BASE=busybox" {
		t.Errorf("meta args = %+v", df.MetaArgs)
	}
	if df.From.Line != 4 || !reflect.DeepEqual(df.From.Args, []string{"${BASE}:latest", "AS", "build"}) {
		t.Errorf("from = %+v", df.From)
	}
	want := []struct {
		kw   string
		line int
		json bool
		args []string
	}{
		{"RUN", 5, false, []string{"echo", "hi", ">", "/x"}},
		{"RUN", 6, true, []string{"/bin/echo", "exec form"}},
		{"COPY", 7, false, []string{"a.txt", "b.txt", "/dst/"}},
		{"ADD", 8, false, []string{"tool.tar.gz", "/opt/"}},
		{"ENV", 9, false, []string{"A=1", `B="two words"`}},
		{"ENV", 10, false, []string{"LEGACY", "some", "value", "here"}},
		{"ARG", 11, false, []string{"VERSION=1.0"}},
		{"WORKDIR", 12, false, []string{"/app"}},
		{"USER", 13, false, []string{"nobody"}},
		{"LABEL", 14, false, []string{"org.example.a=x", `"b c"=d`}},
		{"CMD", 15, true, []string{"sh", "-c", "echo cmd"}},
		{"ENTRYPOINT", 16, false, []string{"/entry.sh"}},
	}
	if len(df.Instructions) != len(want) {
		t.Fatalf("%d instructions, want %d: %+v", len(df.Instructions), len(want), df.Instructions)
	}
	for i, w := range want {
		in := df.Instructions[i]
		if in.Keyword != w.kw || in.Line != w.line || in.JSON != w.json || !reflect.DeepEqual(in.Args, w.args) {
			t.Errorf("instruction %d = %+v, want %+v", i, in, w)
		}
	}
	cp := df.Instructions[2]
	if len(cp.Flags) != 1 || cp.Flags[0] != (Flag{Name: "chown", Value: "1000:1000", HasValue: true}) {
		t.Errorf("copy flags = %+v", cp.Flags)
	}
}

func TestParseContinuationsAndComments(t *testing.T) {
	src := "FROM busybox\n" +
		"# a comment\n" +
		"   # an indented comment\n" +
		"\n" +
		"RUN echo one \\\n" +
		"    && echo two \\\n" +
		"# a comment inside the continuation\n" +
		"\n" +
		"    && echo three\n" +
		"run echo lower-case keyword\n" +
		"ENV X=1 \\\n" +
		"    Y=2\n"
	df := mustParse(t, src)
	if len(df.Instructions) != 3 {
		t.Fatalf("instructions: %+v", df.Instructions)
	}
	run := df.Instructions[0]
	if run.Line != 5 || run.Text != "echo one     && echo two     && echo three" {
		t.Errorf("run = line %d %q", run.Line, run.Text)
	}
	if df.Instructions[1].Keyword != "RUN" || df.Instructions[1].Line != 10 {
		t.Errorf("lower-case run = %+v", df.Instructions[1])
	}
	if env := df.Instructions[2]; env.Line != 11 || !reflect.DeepEqual(env.Args, []string{"X=1", "Y=2"}) {
		t.Errorf("env = %+v", env)
	}
}

func TestParseEscapeDirective(t *testing.T) {
	src := "# escape=`\nFROM busybox\nRUN echo a `\n  b\nCOPY C:\\src /dst\n"
	df := mustParse(t, src)
	if df.Escape != '`' {
		t.Fatalf("escape = %q", df.Escape)
	}
	if got := df.Instructions[0].Text; got != "echo a   b" {
		t.Errorf("continued run = %q", got)
	}
	if got := df.Instructions[1].Args[0]; got != `C:\src` {
		t.Errorf("backslash should be literal with escape=`: %q", got)
	}
	// A directive after an instruction is a comment.
	df = mustParse(t, "FROM busybox\n# escape=`\nRUN echo \\\n x\n")
	if df.Escape != '\\' || df.Instructions[0].Text != "echo  x" {
		t.Errorf("late directive honoured: %q %q", df.Escape, df.Instructions[0].Text)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, src, want string
	}{
		{"unknown instruction", "FROM busybox\nRUN true\nFROBNICATE x\n", "line 3: unknown instruction FROBNICATE"},
		{"unsupported instruction", "FROM busybox\n\nEXPOSE 80\n", "line 3: EXPOSE is not supported"},
		{"heredoc run", "FROM busybox\nRUN <<EOF\necho hi\nEOF\n", "line 2: heredocs are not supported"},
		{"heredoc quoted dash", "FROM busybox\nRUN cat <<-'END' > /x\n", "line 2: heredocs are not supported"},
		{"heredoc copy", "FROM busybox\nCOPY <<EOF /x\n", "line 2: heredocs are not supported"},
		{"second from", "FROM busybox\nRUN true\nFROM busybox\n", "line 3: a second FROM"},
		{"no from", "RUN true\n", "line 1: RUN before FROM"},
		{"empty", "# nothing\n", "no FROM"},
		{"run flag", "FROM busybox\nRUN --mount=type=cache,target=/x true\n", "line 2: RUN --mount is not supported"},
		{"copy bad flag", "FROM busybox\nCOPY --parents a /b\n", "line 2: COPY does not accept --parents"},
		{"unterminated quote", "FROM busybox\nENV A=\"x\n", "line 2: unterminated \" quote"},
		{"bad escape directive", "# escape=x\nFROM busybox\n", "line 1: invalid escape directive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(strings.NewReader(tt.src))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
			if !errors.Is(err, errkind.InvalidArgument) {
				t.Errorf("err %v is not InvalidArgument", err)
			}
		})
	}
}

func TestHeredocDetectionIgnoresLookalikes(t *testing.T) {
	for _, src := range []string{
		`RUN echo "<<EOF"`,
		`RUN echo '<<EOF'`,
		`RUN echo $((1<<2))`,
		`RUN cat <<< "here string"`,
		`RUN echo \<<EOF`,
	} {
		if _, err := Parse(strings.NewReader("FROM busybox\n" + src + "\n")); err != nil {
			t.Errorf("%s: %v", src, err)
		}
	}
}

func TestExpand(t *testing.T) {
	vars := map[string]string{"A": "a", "EMPTY": "", "SP": "x y"}
	lookup := mapLookup(vars)
	tests := []struct{ in, want string }{
		{"$A", "a"},
		{"${A}", "a"},
		{"pre${A}post", "preapost"},
		{"$A$A", "aa"},
		{"$UNSET", ""},
		{"${UNSET:-def}", "def"},
		{"${EMPTY:-def}", "def"},
		{"${EMPTY-def}", ""},
		{"${UNSET-def}", "def"},
		{"${A:-def}", "a"},
		{"${A:+alt}", "alt"},
		{"${EMPTY:+alt}", ""},
		{"${EMPTY+alt}", "alt"},
		{"${UNSET:-${A}x}", "ax"},
		{`'$A'`, "$A"},
		{`"$A b"`, "a b"},
		{`\$A`, "$A"},
		{`"\$A"`, "$A"},
		{`"a\b"`, `a\b`},
		{`a\ b`, "a b"},
		{"$SP", "x y"},
		{"$", "$"},
		{"cost: $5", "cost: $5"},
	}
	for _, tt := range tests {
		got, err := Expand(tt.in, lookup)
		if err != nil || got != tt.want {
			t.Errorf("Expand(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"${A", "${}", "${A:=x}", `"open`, "${UNSET:?must be set}"} {
		if _, err := Expand(bad, lookup); err == nil {
			t.Errorf("Expand(%q) succeeded", bad)
		}
	}
}

func TestSplitWords(t *testing.T) {
	got, err := splitWords(`a "b c" 'd e' f\ g  h`, '\\')
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"a", `"b c"`, `'d e'`, `f\ g`, "h"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q want %q", got, want)
	}
}
