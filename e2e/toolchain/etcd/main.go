// Command etcd is the etcd server, built from go.etcd.io/etcd/server/v3 for
// the local test cluster. etcd's own main module carries replace directives,
// so it cannot be built with `go install`; this wrapper calls the same entry.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
