// Command edgeprovd is the edgeprov provisioning daemon.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/edgeprov/edgeprov/daemon/app"
)

func main() {
	err := app.Main(context.Background(), os.Args[1:], os.Stdout, os.Stderr)
	if err == nil {
		return
	}
	code := app.ExitFail
	var ee *app.ExitError
	if errors.As(err, &ee) {
		code = ee.Code
	}
	if code != app.ExitOK {
		fmt.Fprintln(os.Stderr, "edgeprovd:", err)
	}
	os.Exit(code)
}
