package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/bangerdev/banger/internal/agentclient"
	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/errkind"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/vmm"
)

// vmRuntime is the in-memory side of a running VM: its VMM instance and
// the agent session. The durable side (identity, paths) is on the VM row.
type vmRuntime struct {
	inst vmm.Instance
	// stopping is set while banger itself stops the VM, so the exit watcher
	// does not report the exit as a crash.
	stopping bool
	exited   chan struct{}

	agentMu sync.Mutex
	agent   *agentclient.Client
}

// vmRegistry tracks running VMs and per-VM locks.
type vmRegistry struct {
	mu       sync.Mutex
	running  map[string]*vmRuntime // by VM id
	locks    map[string]*sync.Mutex
	creating map[string]bool // names reserved by in-flight creates
	starting map[string]bool // ids of VMs being started
}

func newVMRegistry() *vmRegistry {
	return &vmRegistry{
		running:  map[string]*vmRuntime{},
		locks:    map[string]*sync.Mutex{},
		creating: map[string]bool{},
		starting: map[string]bool{},
	}
}

// lock takes the per-VM lock that serialises lifecycle operations.
func (r *vmRegistry) lock(id string) func() {
	r.mu.Lock()
	m, ok := r.locks[id]
	if !ok {
		m = &sync.Mutex{}
		r.locks[id] = m
	}
	r.mu.Unlock()
	m.Lock()
	return m.Unlock
}

func (r *vmRegistry) get(id string) *vmRuntime {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.running[id]
}

func (r *vmRegistry) put(id string, rt *vmRuntime) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.running[id] = rt
}

func (r *vmRegistry) remove(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.running, id)
}

// reserve claims a name for an in-flight create.
func (r *vmRegistry) reserve(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.creating[name] {
		return false
	}
	r.creating[name] = true
	return true
}

func (r *vmRegistry) unreserve(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.creating, name)
}

// markStarting records that the VM id is being started, until the
// returned func is called.
func (r *vmRegistry) markStarting(id string) func() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.starting[id] = true
	return func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		delete(r.starting, id)
	}
}

func (r *vmRegistry) isStarting(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.starting[id]
}

// ListVMs returns every VM.
func (d *Daemon) ListVMs(ctx context.Context) ([]api.VMInfo, error) {
	vms, err := d.store.ListVMs(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]api.VMInfo, 0, len(vms))
	for _, vm := range vms {
		out = append(out, d.vmInfo(vm))
	}
	return out, nil
}

// ShowVM returns one VM.
func (d *Daemon) ShowVM(ctx context.Context, ref string) (api.VMInfo, error) {
	vm, err := d.store.GetVM(ctx, ref)
	if err != nil {
		return api.VMInfo{}, err
	}
	return d.vmInfo(vm), nil
}

func (d *Daemon) vmInfo(vm *model.VM) api.VMInfo {
	info := api.VMInfo{VM: *vm, Emulated: vm.Accel == string(vmm.AccelTCG)}
	if id, err := parseIdentity(vm.Identity); err == nil && id.ConsoleLog != "" {
		info.ConsoleLog = id.ConsoleLog
	} else {
		info.ConsoleLog = consoleLogPath(vm)
	}
	return info
}

func parseIdentity(s string) (vmm.Identity, error) {
	var id vmm.Identity
	if s == "" {
		return id, fmt.Errorf("no identity recorded")
	}
	err := json.Unmarshal([]byte(s), &id)
	return id, err
}

// agentFor returns the agent session of a running VM, dialling it when
// needed.
func (d *Daemon) agentFor(ctx context.Context, vm *model.VM) (*agentclient.Client, error) {
	rt := d.vms.get(vm.ID)
	if rt == nil {
		return nil, errkind.WithHint(errkind.New(errkind.Conflict, "vm %q is %s, not running", vm.Name, vm.State),
			"start it with `banger vm start "+vm.Name+"`")
	}
	return rt.agentClient(ctx)
}

func (rt *vmRuntime) agentClient(ctx context.Context) (*agentclient.Client, error) {
	rt.agentMu.Lock()
	defer rt.agentMu.Unlock()
	if rt.agent != nil && !closed(rt.agent.Done()) {
		return rt.agent, nil
	}
	if rt.agent != nil {
		rt.agent.Close()
		rt.agent = nil
	}
	conn, err := rt.inst.DialAgent(ctx)
	if err != nil {
		return nil, errkind.Wrap(errkind.Unavailable, err, "connecting to the guest agent")
	}
	c, err := agentclient.NewContext(ctx, conn)
	if err != nil {
		conn.Close()
		return nil, errkind.Wrap(errkind.Unavailable, err, "guest agent handshake")
	}
	rt.agent = c
	return c, nil
}

func (rt *vmRuntime) closeAgent() {
	rt.agentMu.Lock()
	defer rt.agentMu.Unlock()
	if rt.agent != nil {
		rt.agent.Close()
		rt.agent = nil
	}
}

// waitAgent polls the agent until it answers a health call, the VMM exits,
// or the timeout passes.
func (d *Daemon) waitAgent(ctx context.Context, rt *vmRuntime, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		select {
		case <-rt.exited:
			return fmt.Errorf("the VMM exited before the guest agent answered")
		default:
		}
		actx, acancel := context.WithTimeout(ctx, 5*time.Second)
		c, err := rt.agentClient(actx)
		if err == nil {
			_, err = c.Health(actx)
			if err != nil {
				rt.closeAgent()
			}
		}
		acancel()
		if err == nil {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			if ctx.Err() == context.DeadlineExceeded {
				return fmt.Errorf("guest agent did not answer within %s (last error: %v)", timeout, last)
			}
			return ctx.Err()
		case <-rt.exited:
			return fmt.Errorf("the VMM exited before the guest agent answered")
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
