// Command coredns is the local cluster's DNS server: CoreDNS with only the plugins our
// Corefile (tests/cluster/scripts/cluster-dns.sh) uses, and log for when a query needs to be
// seen. Nothing here can forward a query off the machine: no forward plugin is compiled in.
package main

import (
	"github.com/coredns/coredns/coremain"

	// Plugins register themselves with the server when imported; the order they run in is
	// CoreDNS's own (core/dnsserver), not the order of these imports.
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
)

func main() { coremain.Run() }
