package agent

import (
	"sync"
	"testing"
	"time"
)

func TestSysReadyWaitsOnce(t *testing.T) {
	var mu sync.Mutex
	calls := 0
	r := &sysReady{logf: t.Logf, probe: func() bool {
		mu.Lock()
		defer mu.Unlock()
		calls++
		return calls >= 3 // active on the third look
	}}
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ { // concurrent commands share the wait
		wg.Add(1)
		go func() { defer wg.Done(); r.wait(time.Minute) }()
	}
	wg.Wait()
	if calls != 3 {
		t.Fatalf("probed %d times, want 3", calls)
	}
	if d := time.Since(start); d < 100*time.Millisecond || d > 5*time.Second {
		t.Fatalf("waited %v", d)
	}
	r.wait(time.Minute)
	if calls != 3 {
		t.Fatalf("probed again after basic.target was reached (%d)", calls)
	}
}

func TestSysReadyTimeout(t *testing.T) {
	r := &sysReady{logf: t.Logf, probe: func() bool { return false }}
	start := time.Now()
	r.wait(200 * time.Millisecond)
	if d := time.Since(start); d < 200*time.Millisecond || d > 3*time.Second {
		t.Fatalf("timeout after %v", d)
	}
	if !r.done {
		t.Fatal("a timed-out wait is not remembered")
	}
}

func TestServerWaitsOnlyUnderSystemd(t *testing.T) {
	if NewServer(Config{InitMode: ModeAgent}).ready != nil || NewServer(Config{}).ready != nil {
		t.Fatal("a guest without systemd waits for basic.target")
	}
	if NewServer(Config{InitMode: ModeSystemd}).ready == nil {
		t.Fatal("a systemd guest does not wait for basic.target")
	}
}
