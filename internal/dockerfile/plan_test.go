package dockerfile

import (
	"reflect"
	"strings"
	"testing"
)

var busyboxBase = Config{Env: []string{"PATH=/usr/bin:/bin"}, Cmd: []string{"sh"}, Labels: map[string]string{"base": "yes"}}

func mustPlan(t *testing.T, src string, args map[string]string) *Plan {
	t.Helper()
	p, err := mustParse(t, src).Plan(busyboxBase, args)
	if err != nil {
		t.Fatalf("plan: %v", err)
	}
	return p
}

func TestPlanResolvesEverything(t *testing.T) {
	src := `ARG TAG=latest
FROM busybox:${TAG}
ARG TAG
ARG WHO=world
ENV GREETING="hello $WHO" PATH=$PATH:/opt/bin
LABEL version=$TAG who=${WHO}
WORKDIR /srv
WORKDIR app
RUN echo "$GREETING" > greeting
USER 1000:1000
COPY --chown=${WHO}:1000 ["conf dir/", "./"]
COPY a.txt b.txt ../etc/
ADD --chmod=644 /rootfile rel
ENTRYPOINT ["/bin/app"]
`
	p := mustPlan(t, src, map[string]string{"TAG": "1.36", "WHO": "banger", "http_proxy": "http://proxy:3128", "UNUSED": "x"})
	if p.Base != "busybox:1.36" {
		t.Errorf("base = %q", p.Base)
	}
	if !reflect.DeepEqual(p.UnusedArgs, []string{"UNUSED"}) {
		t.Errorf("unused = %v", p.UnusedArgs)
	}
	wantCfg := Config{
		Env:        []string{"PATH=/usr/bin:/bin:/opt/bin", "GREETING=hello banger"},
		WorkingDir: "/srv/app",
		User:       "1000:1000",
		Entrypoint: []string{"/bin/app"},
		Labels:     map[string]string{"base": "yes", "version": "1.36", "who": "banger"},
	}
	if !reflect.DeepEqual(p.Config, wantCfg) {
		t.Errorf("config = %+v\nwant     %+v", p.Config, wantCfg)
	}
	if len(p.Steps) != 6 {
		t.Fatalf("steps: %+v", p.Steps)
	}
	if s := p.Steps[0]; s.Kind != StepMkdir || s.Dir != "/srv" || s.Line != 7 {
		t.Errorf("step 0 = %+v", s)
	}
	if s := p.Steps[1]; s.Kind != StepMkdir || s.Dir != "/srv/app" {
		t.Errorf("step 1 = %+v", s)
	}
	run := p.Steps[2].Run
	if run == nil || !reflect.DeepEqual(run.Argv, []string{"/bin/sh", "-c", `echo "$GREETING" > greeting`}) || run.Cwd != "/srv/app" || run.User != "" {
		t.Fatalf("run = %+v", run)
	}
	wantEnv := []string{"PATH=/usr/bin:/bin:/opt/bin", "GREETING=hello banger", "TAG=1.36", "WHO=banger"}
	if !reflect.DeepEqual(run.Env, wantEnv) {
		t.Errorf("run env = %v, want %v", run.Env, wantEnv)
	}
	if !reflect.DeepEqual(run.ProxyEnv, []string{"http_proxy=http://proxy:3128"}) {
		t.Errorf("proxy env = %v", run.ProxyEnv)
	}
	if strings.Contains(p.Steps[2].Key(), "proxy") {
		t.Errorf("proxy settings leak into the cache key: %s", p.Steps[2].Key())
	}
	c1 := p.Steps[3].Copy
	if c1 == nil || !reflect.DeepEqual(c1.Sources, []string{"conf dir"}) || c1.Dest != "/srv/app/" || c1.Chown != "banger:1000" || c1.Chmod != -1 {
		t.Errorf("copy 1 = %+v", c1)
	}
	c2 := p.Steps[4].Copy
	if !reflect.DeepEqual(c2.Sources, []string{"a.txt", "b.txt"}) || c2.Dest != "/srv/etc/" {
		t.Errorf("copy 2 = %+v", c2)
	}
	c3 := p.Steps[5].Copy
	if !c3.Add || !reflect.DeepEqual(c3.Sources, []string{"rootfile"}) || c3.Dest != "/srv/app/rel" || c3.Chmod != 0o644 {
		t.Errorf("add = %+v", c3)
	}
}

func TestPlanArgScoping(t *testing.T) {
	// A pre-FROM ARG is visible in FROM only, unless redeclared.
	p := mustPlan(t, "ARG V=1\nFROM busybox\nRUN echo $V\nARG V\nRUN echo $V\n", nil)
	if got := p.Steps[0].Run.Env; len(got) != 1 {
		t.Errorf("first RUN sees the meta arg: %v", got)
	}
	if got := p.Steps[1].Run.Env; !reflect.DeepEqual(got, []string{"PATH=/usr/bin:/bin", "V=1"}) {
		t.Errorf("second RUN env = %v", got)
	}
	// ENV beats ARG of the same name; an ARG without value or build-arg is unset.
	p = mustPlan(t, "FROM busybox\nARG X=arg\nENV X=env\nARG NOVAL\nWORKDIR /$X$NOVAL\n", nil)
	if p.Steps[0].Dir != "/env" {
		t.Errorf("workdir = %q", p.Steps[0].Dir)
	}
	// --build-arg overrides a default.
	p = mustPlan(t, "FROM busybox\nARG X=default\nWORKDIR /$X\n", map[string]string{"X": "given"})
	if p.Steps[0].Dir != "/given" {
		t.Errorf("workdir = %q", p.Steps[0].Dir)
	}
}

func TestPlanCmdEntrypoint(t *testing.T) {
	// ENTRYPOINT resets the base's CMD unless CMD is set in the file.
	p := mustPlan(t, "FROM busybox\nENTRYPOINT [\"/e\"]\n", nil)
	if p.Config.Cmd != nil || !reflect.DeepEqual(p.Config.Entrypoint, []string{"/e"}) {
		t.Errorf("config = %+v", p.Config)
	}
	p = mustPlan(t, "FROM busybox\nCMD echo hi\nENTRYPOINT [\"/e\"]\n", nil)
	if !reflect.DeepEqual(p.Config.Cmd, []string{"/bin/sh", "-c", "echo hi"}) {
		t.Errorf("cmd = %v", p.Config.Cmd)
	}
	// Metadata-only Dockerfiles have no steps.
	p = mustPlan(t, "FROM busybox\nENV A=1\nLABEL a=b\nUSER nobody\n", nil)
	if len(p.Steps) != 0 {
		t.Errorf("steps = %+v", p.Steps)
	}
}

func TestPlanErrors(t *testing.T) {
	tests := []struct{ name, src, want string }{
		{"copy outside context", "FROM busybox\nCOPY ../secret /x\n", "line 2: COPY source \"../secret\" is outside the build context"},
		{"copy outside via subdir", "FROM busybox\nRUN true\nADD a/../../b /x\n", "line 3: ADD source \"a/../../b\" is outside the build context"},
		{"copy from stage", "FROM busybox\nCOPY --from=build /a /b\n", "line 2: COPY --from is not supported"},
		{"add url", "FROM busybox\nADD https://example.com/x /x\n", "line 2: ADD from a URL"},
		{"copy one arg", "FROM busybox\nCOPY onlyone\n", "line 2: COPY wants at least one source"},
		{"bad chmod", "FROM busybox\nCOPY --chmod=999 a /b\n", "line 2: COPY --chmod=999"},
		{"env not kv", "FROM busybox\nENV A=1 B\n", "line 2: ENV: \"B\" is not key=value"},
		{"env legacy no value", "FROM busybox\nENV A\n", "line 2: ENV A: missing value"},
		{"bad var", "FROM busybox\nWORKDIR ${X\n", "line 2: WORKDIR: missing }"},
		{"from scratch", "FROM scratch\n", "line 1: FROM scratch"},
		{"from platform", "FROM --platform=linux/arm64 busybox\n", "banger builds linux/amd64 only"},
		{"arg bad name", "FROM busybox\nARG 1x=2\n", "line 2: ARG: invalid name"},
		{"empty run", "FROM busybox\nRUN\n", "line 2: RUN wants a command"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			df, err := Parse(strings.NewReader(tt.src))
			if err == nil {
				_, err = df.Plan(busyboxBase, nil)
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestStepKeyDependsOnWhatMatters(t *testing.T) {
	key := func(src string) string {
		p := mustPlan(t, src, nil)
		return p.Steps[len(p.Steps)-1].Key()
	}
	base := key("FROM busybox\nRUN echo hi\n")
	if base != key("FROM busybox\n# comment\nLABEL x=y\n\nRUN echo hi\n") {
		t.Error("comments, blank lines and labels changed the key")
	}
	for _, other := range []string{
		"FROM busybox\nRUN echo ho\n",
		"FROM busybox\nENV A=1\nRUN echo hi\n",
		"FROM busybox\nWORKDIR /x\nRUN echo hi\n",
		"FROM busybox\nUSER 1\nRUN echo hi\n",
		"FROM busybox\nARG A=1\nRUN echo hi\n",
	} {
		if key(other) == base {
			t.Errorf("%q has the same key as RUN echo hi", other)
		}
	}
}
