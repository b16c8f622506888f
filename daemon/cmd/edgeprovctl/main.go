// Command edgeprovctl operates edgeprov.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/edgeprov/edgeprov/daemon/ctl"
)

func main() {
	err := ctl.Main(context.Background(), os.Args[1:], os.Stdout, os.Stderr)
	if err == nil {
		return
	}
	code := 1
	var ee *ctl.ExitError
	if errors.As(err, &ee) {
		code = ee.Code
	}
	if code != 0 {
		fmt.Fprintln(os.Stderr, "edgeprovctl:", err)
	}
	os.Exit(code)
}
