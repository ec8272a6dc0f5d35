package hostnet

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
)

// TapPool keeps a few idle taps enslaved to the bridge so a VM start does
// not wait for one. Taps are named Prefix+N and marked with the owner (a
// banger state directory); a tap given to a VM is deleted when the VM lets
// it go (never reused, so nothing of one VM is left on the next), and the
// pool is refilled in the background.
type TapPool struct {
	links  Links
	bridge string
	prefix string
	owner  string
	size   int

	mu   sync.Mutex
	idle []string
	used map[string]bool // names handed out and not yet deleted
	next int
}

// NewTapPool returns an empty pool; call Reconcile before use.
func NewTapPool(links Links, bridge, prefix, owner string, size int) *TapPool {
	return &TapPool{links: links, bridge: bridge, prefix: prefix, owner: owner, size: size, used: map[string]bool{}}
}

// Owns reports whether name is one of the pool's taps.
func (p *TapPool) Owns(name string) bool {
	n, ok := strings.CutPrefix(name, p.prefix)
	if !ok || n == "" {
		return false
	}
	_, err := strconv.Atoi(n)
	return err == nil
}

// Reconcile deletes every tap of the pool's prefix and owner (or with no
// owner mark) that is not in keep (taps of running VMs), then refills the
// idle pool. Taps another owner marked are left alone. It returns the
// names it deleted.
func (p *TapPool) Reconcile(keep map[string]bool) ([]string, error) {
	links, err := p.links.List()
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.idle = nil
	p.used = map[string]bool{}
	var deleted []string
	var errs []error
	for _, l := range links {
		if !p.Owns(l.Name) {
			continue
		}
		n, _ := strconv.Atoi(strings.TrimPrefix(l.Name, p.prefix))
		p.next = max(p.next, n+1)
		if l.Alias != "" && l.Alias != p.owner {
			p.used[l.Name] = true // another home's: never reuse the name
			continue
		}
		if keep[l.Name] {
			p.used[l.Name] = true
			continue
		}
		if err := p.links.DeleteLink(l.Name); err != nil {
			errs = append(errs, err)
			continue
		}
		deleted = append(deleted, l.Name)
	}
	p.fillLocked()
	return deleted, errors.Join(errs...)
}

// nameLocked returns the next free tap name.
func (p *TapPool) nameLocked() (string, error) {
	for range 100000 {
		name := p.prefix + strconv.Itoa(p.next)
		p.next++
		if p.next > 99999 {
			p.next = 0
		}
		if len(name) > 15 {
			p.next = 0
			continue
		}
		if !p.used[name] && !p.isIdle(name) {
			return name, nil
		}
	}
	return "", fmt.Errorf("no free tap name with prefix %q", p.prefix)
}

func (p *TapPool) isIdle(name string) bool {
	for _, n := range p.idle {
		if n == name {
			return true
		}
	}
	return false
}

func (p *TapPool) fillLocked() {
	for len(p.idle) < p.size {
		name, err := p.nameLocked()
		if err != nil {
			return
		}
		if err := p.links.AddTap(name, p.bridge, p.owner); err != nil {
			return // the pool is an optimisation; Take creates on demand
		}
		p.idle = append(p.idle, name)
	}
}

// Fill tops the idle pool up.
func (p *TapPool) Fill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fillLocked()
}

// Take returns a tap for a VM: an idle one, or a new one.
func (p *TapPool) Take() (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.idle) > 0 {
		name := p.idle[0]
		p.idle = p.idle[1:]
		p.used[name] = true
		return name, nil
	}
	name, err := p.nameLocked()
	if err != nil {
		return "", err
	}
	if err := p.links.AddTap(name, p.bridge, p.owner); err != nil {
		return "", err
	}
	p.used[name] = true
	return name, nil
}

// Adopt marks an existing tap as in use (a running VM's, after restart).
func (p *TapPool) Adopt(name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.used[name] = true
}

// Release deletes a tap a VM no longer uses.
func (p *TapPool) Release(name string) error {
	p.mu.Lock()
	delete(p.used, name)
	p.mu.Unlock()
	return p.links.DeleteLink(name)
}

// Idle returns the idle taps (for status and tests).
func (p *TapPool) Idle() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.idle...)
}

// Close deletes the idle taps.
func (p *TapPool) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var errs []error
	for _, n := range p.idle {
		errs = append(errs, p.links.DeleteLink(n))
	}
	p.idle = nil
	return errors.Join(errs...)
}
