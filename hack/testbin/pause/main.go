// pause holds a Pod's namespaces for the real test-bed node, as Kubernetes' own pause
// image does: PID 1 of the sandbox, it reaps orphaned children and exits on SIGINT or
// SIGTERM. Built by hack/testbin/build.sh into the image registry.k8s.io/pause:3.10.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var status syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
