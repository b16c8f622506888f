package ctl

import (
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/edgeprov/edgeprov/daemon/dpsapi"
	"github.com/edgeprov/edgeprov/daemon/dpsapi/sas"
)

func keysCmd(g *globals) *cobra.Command {
	keys := &cobra.Command{Use: "keys", Short: "Symmetric key computations (local, no daemon needed)"}
	var keyFile, regID string
	derive := &cobra.Command{
		Use:   "derive --group-key-file F --registration-id ID",
		Short: "Print the device key derived from a symmetric-key group key",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := dpsapi.ValidateRegistrationID(regID); err != nil {
				return &ExitError{ExitUsage, err}
			}
			k, err := readKey(keyFile)
			if err != nil {
				return &ExitError{ExitConfig, err}
			}
			fmt.Fprintln(g.stdout, base64.StdEncoding.EncodeToString(sas.DeriveDeviceKey(k, regID)))
			return nil
		},
	}
	derive.Flags().StringVar(&keyFile, "group-key-file", "", "file holding the base64 group key")
	derive.Flags().StringVar(&regID, "registration-id", "", "the device's registration ID")
	keys.AddCommand(derive)
	return keys
}

func sasCmd(g *globals) *cobra.Command {
	var keyFile, resource, scope, regID, keyName string
	var ttl time.Duration
	c := &cobra.Command{
		Use:   "sas --key-file F (--resource R | --scope S --registration-id ID)",
		Short: "Mint a SharedAccessSignature token (device or service policy)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			res, skn := resource, keyName
			if res == "" {
				if err := dpsapi.ValidateIDScope(scope); err != nil {
					return usageErr("give --resource, or --scope and --registration-id: %w", err)
				}
				if err := dpsapi.ValidateRegistrationID(regID); err != nil {
					return &ExitError{ExitUsage, err}
				}
				res = sas.DeviceResource(scope, regID)
				if skn == "" {
					skn = sas.DeviceKeyName
				}
			}
			if ttl <= 0 {
				return usageErr("--ttl must be positive")
			}
			k, err := readKey(keyFile)
			if err != nil {
				return &ExitError{ExitConfig, err}
			}
			fmt.Fprintln(g.stdout, sas.Build(k, res, time.Now().Add(ttl), skn))
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&keyFile, "key-file", "", "file holding the base64 key (device key or policy key)")
	f.StringVar(&resource, "resource", "", "resource URI (sr), e.g. a host name for a service policy")
	f.StringVar(&scope, "scope", "", "ID scope, for a device token")
	f.StringVar(&regID, "registration-id", "", "registration ID, for a device token")
	f.DurationVar(&ttl, "ttl", time.Hour, "token lifetime")
	f.StringVar(&keyName, "key-name", "", `skn: "registration" for devices (the default with --scope), a policy name for the service API`)
	return c
}

func readKey(path string) ([]byte, error) {
	if path == "" {
		return nil, errors.New("a key file is required (keys are never taken from the command line)")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(data)), "\n")
	return sas.DecodeKey(line)
}
