// Command edgeprov-agent provisions a device at first boot.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/edgeprov/edgeprov/agent/cli"
)

func main() {
	err := cli.Main(context.Background(), os.Args[1:], os.Stdout, os.Stderr)
	if err == nil {
		return
	}
	code := cli.ExitFail
	var ee *cli.ExitError
	if errors.As(err, &ee) {
		code = ee.Code
	}
	fmt.Fprintln(os.Stderr, "edgeprov-agent:", err)
	os.Exit(code)
}
