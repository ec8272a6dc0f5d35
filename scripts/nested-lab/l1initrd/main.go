// Command l1initrd builds the initrd of the nested lab's L1 guest with
// banger's own builder: banger-agent as /init, the modules every banger
// guest gets, plus KVM for AMD (the lab's QEMU TCG emulates AMD-V), and
// what bangerd's host networking needs: tun, bridge and the nf_tables
// expressions of its ruleset (L1 has no modprobe, so the kernel cannot
// load them on demand).
//
//	go run ./scripts/nested-lab/l1initrd -agent bin/banger-agent -modules <kernel>/modules -o initrd.img
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/bangerdev/banger/internal/initrd"
)

func main() {
	agent := flag.String("agent", "", "static banger-agent binary")
	modules := flag.String("modules", "", "the kernel's lib/modules/<release> directory")
	out := flag.String("o", "", "initrd to write")
	flag.Parse()
	if *agent == "" || *modules == "" || *out == "" {
		flag.Usage()
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	mods := append(initrd.DefaultModules(), "kvm_amd", "tun", "bridge",
		"nf_tables", "nft_ct", "nft_nat", "nft_chain_nat", "nft_masq",
		"nft_reject", "nft_reject_ipv4", "nft_reject_inet", "nft_meta_bridge", "nft_reject_bridge")
	res, err := initrd.BuildResult(ctx, initrd.Spec{AgentPath: *agent, ModulesDir: *modules, Modules: mods}, *out)
	if err != nil {
		fmt.Fprintln(os.Stderr, "l1initrd:", err)
		os.Exit(1)
	}
	fmt.Printf("l1initrd: %s, %d bytes, modules: %s\n", res.Path, res.Size, strings.Join(res.Plan.Order(), " "))
}
