// CoreDNS for the test bed's cluster DNS, with only the plugins its Corefile uses: the
// full plugin set pulls in every cloud provider's SDK and doubles the cold build. The
// directive order is CoreDNS's own (core/dnsserver); plugins not linked here are unknown
// to this binary, and a Corefile naming one is refused at start.
package main

import (
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/template"

	"github.com/coredns/coredns/coremain"
)

func main() {
	coremain.Run()
}
