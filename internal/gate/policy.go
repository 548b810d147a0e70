//go:build linux

package gate

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"

	"github.com/uffdgate/uffdgate/internal/decision"
)

// compiled is a policy in the kernel's terms, for one generation.
type compiled struct {
	cfg     gateUffdConfig
	exes    map[gateExeKey]uint64
	uids    map[gateIdKey]uint64
	gids    map[gateIdKey]uint64
	cgroups map[gateCgroupKey]gateCgroupVal
}

func compile(g decision.Gate, gen uint32, kill bool, burst uint32) (*compiled, error) {
	if len(g.Rules) > decision.MaxRules {
		return nil, fmt.Errorf("%d rules: at most %d fit", len(g.Rules), decision.MaxRules)
	}
	c := &compiled{
		exes: map[gateExeKey]uint64{}, uids: map[gateIdKey]uint64{},
		gids: map[gateIdKey]uint64{}, cgroups: map[gateCgroupKey]gateCgroupVal{},
	}
	c.cfg = gateUffdConfig{Magic: configMagic, Gen: gen, Mode: uint32(g.Mode)}
	if g.Audit {
		c.cfg.Audit = 1
	}
	if kill {
		c.cfg.Kill = 1
	}
	c.cfg.EventBurst = burst
	c.cfg.UserEventBurst = burst * UserBurstFactor
	for i, r := range g.Rules {
		bit := uint64(1) << uint(i)
		c.cfg.Rules |= bit
		switch {
		case r.AuditOnly:
			c.cfg.AuditOnly |= bit
		}
		if r.Grant == decision.GrantKernelFaults {
			c.cfg.GrantKernel |= bit
		} else {
			c.cfg.GrantUmo |= bit
		}
		if !r.HasExe {
			c.cfg.NoExe |= bit
		}
		for _, e := range r.Exes {
			c.exes[gateExeKey{Gen: gen, Dev: e.Dev, Ino: e.Ino, Igen: e.Gen}] |= bit
		}
		if !r.HasUID {
			c.cfg.NoUid |= bit
		}
		for _, u := range r.UIDs {
			c.uids[gateIdKey{Gen: gen, Id: u}] |= bit
		}
		if !r.HasGID {
			c.cfg.NoGid |= bit
		}
		for _, g := range r.GIDs {
			c.gids[gateIdKey{Gen: gen, Id: g}] |= bit
		}
		if !r.HasCgroup {
			c.cfg.NoCgroup |= bit
		}
		for _, cg := range r.Cgroups {
			k := gateCgroupKey{Id: cg.ID, Gen: gen}
			v := c.cgroups[k]
			if cg.Subtree {
				v.Subtree |= bit
			} else {
				v.Exact |= bit
			}
			c.cgroups[k] = v
		}
		if r.Caps == 0 {
			c.cfg.NoCaps |= bit
		}
		for cap := range 64 {
			if r.Caps&(1<<uint(cap)) != 0 {
				c.cfg.CapRules[cap] |= bit
				c.cfg.CapsNamed |= 1 << uint(cap)
			}
		}
	}
	return c, nil
}

// Apply makes g the policy in force, atomically: the new generation's entries
// and config are written beside the current ones, then one write of `active`
// switches every later decision to it. If anything fails before the switch, the
// current policy stays in force and the partial generation is removed. Entries
// two generations old are removed afterwards: no decision can still use them.
func (gt *Gate) Apply(g decision.Gate) error {
	gen := gt.gen + 1
	if hasExeRules(g) {
		if err := gt.attachTracker(); err != nil {
			return fmt.Errorf("policy generation %d (the previous policy stays in force): %w", gen, err)
		}
	}
	c, err := compile(g, gen, gt.kill, gt.burst)
	if err != nil {
		return err
	}
	if err := gt.write(c); err != nil {
		gt.purge(func(k uint32) bool { return k == gen })
		return fmt.Errorf("writing policy generation %d (the previous policy stays in force): %w", gen, err)
	}
	if err := gt.maps.Config.Put(gen&1, &c.cfg); err != nil {
		gt.purge(func(k uint32) bool { return k == gen })
		return fmt.Errorf("writing policy generation %d (the previous policy stays in force): %w", gen, err)
	}
	if err := gt.maps.Active.Put(uint32(0), gen); err != nil {
		return fmt.Errorf("switching to policy generation %d (the previous policy stays in force): %w", gen, err)
	}
	gt.gen = gen
	gt.purge(func(k uint32) bool { return k != gen && k != gen-1 })
	return nil
}

func hasExeRules(g decision.Gate) bool {
	for _, r := range g.Rules {
		if r.HasExe {
			return true
		}
	}
	return false
}

// Generation is the policy generation in force (events carry it).
func (gt *Gate) Generation() uint32 { return gt.gen }

func (gt *Gate) write(c *compiled) error {
	for k, v := range c.exes {
		if err := gt.maps.ExeRules.Put(&k, v); err != nil {
			return fmt.Errorf("executable map: %w", err)
		}
	}
	for k, v := range c.uids {
		if err := gt.maps.UidRules.Put(&k, v); err != nil {
			return fmt.Errorf("uid map: %w", err)
		}
	}
	for k, v := range c.gids {
		if err := gt.maps.GidRules.Put(&k, v); err != nil {
			return fmt.Errorf("gid map: %w", err)
		}
	}
	for k, v := range c.cgroups {
		if err := gt.maps.CgroupRules.Put(&k, &v); err != nil {
			return fmt.Errorf("cgroup map: %w", err)
		}
	}
	return nil
}

// purge deletes the map entries of the generations drop selects.
func (gt *Gate) purge(drop func(gen uint32) bool) {
	purgeMap[gateExeKey](gt.maps.ExeRules, func(k gateExeKey) bool { return drop(k.Gen) })
	purgeMap[gateIdKey](gt.maps.UidRules, func(k gateIdKey) bool { return drop(k.Gen) })
	purgeMap[gateIdKey](gt.maps.GidRules, func(k gateIdKey) bool { return drop(k.Gen) })
	purgeMap[gateCgroupKey](gt.maps.CgroupRules, func(k gateCgroupKey) bool { return drop(k.Gen) })
}

func purgeMap[K any](m *ebpf.Map, drop func(K) bool) {
	var stale []K
	var k K
	it := m.Iterate()
	var raw []byte
	for it.Next(&k, &raw) {
		if drop(k) {
			stale = append(stale, k)
		}
	}
	for _, k := range stale {
		if err := m.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			continue
		}
	}
}
