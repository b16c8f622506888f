package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/edgeprov/edgeprov/daemon/adminclient"
	"github.com/edgeprov/edgeprov/daemon/enrollment"
	"github.com/edgeprov/edgeprov/daemon/pki"
)

// enrollmentFlags build an enrollment from flags (or a file).
type enrollmentFlags struct {
	file, primaryKeyFile, secondaryKeyFile, deviceID, allocation, status string
	hubs, prefixes                                                       []string
	iotEdge                                                              bool
}

func (f *enrollmentFlags) register(c *cobra.Command, group bool) {
	fl := c.Flags()
	fl.StringVarP(&f.file, "file", "f", "", "read the enrollment from a JSON or YAML file (DPS field names)")
	fl.StringVar(&f.primaryKeyFile, "primary-key-file", "", "file holding the base64 primary key (none: the daemon generates keys)")
	fl.StringVar(&f.secondaryKeyFile, "secondary-key-file", "", "file holding the base64 secondary key")
	fl.StringVar(&f.allocation, "allocation-policy", "", "hashed, static, geoLatency or custom")
	fl.StringSliceVar(&f.hubs, "hub", nil, "linked hub host name the entry may be assigned to (repeatable)")
	fl.StringVar(&f.status, "provisioning-status", "", "enabled or disabled")
	fl.BoolVar(&f.iotEdge, "iot-edge", false, "provision as an IoT Edge device")
	if group {
		fl.StringSliceVar(&f.prefixes, "registration-id-prefix", nil, "registration ID prefix of the group's devices (edgeprov; repeatable)")
	} else {
		fl.StringVar(&f.deviceID, "device-id", "", "hub device ID (default: the registration ID)")
	}
}

func (f *enrollmentFlags) common() (enrollment.Common, error) {
	c := enrollment.Common{Attestation: enrollment.Attestation{Type: enrollment.AttestationSymmetricKey, SymmetricKey: &enrollment.SymmetricKeyAttestation{}},
		AllocationPolicy: f.allocation, IoTHubs: f.hubs, ProvisioningStatus: f.status}
	if f.iotEdge {
		c.Capabilities = &enrollment.Capabilities{IoTEdge: true}
	}
	for _, k := range []struct {
		file string
		dst  *string
	}{{f.primaryKeyFile, &c.Attestation.SymmetricKey.PrimaryKey}, {f.secondaryKeyFile, &c.Attestation.SymmetricKey.SecondaryKey}} {
		if k.file == "" {
			continue
		}
		data, err := os.ReadFile(k.file)
		if err != nil {
			return c, &ExitError{ExitConfig, err}
		}
		*k.dst = strings.TrimSpace(strings.SplitN(strings.TrimSpace(string(data)), "\n", 2)[0])
	}
	return c, nil
}

// readEntry decodes a JSON or YAML file into v.
func readEntry(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return &ExitError{ExitConfig, err}
	}
	if t := bytes.TrimSpace(data); len(t) > 0 && t[0] == '{' {
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		err = dec.Decode(v)
	} else {
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		err = dec.Decode(v)
	}
	if err != nil {
		return &ExitError{ExitConfig, fmt.Errorf("%s: %w", path, err)}
	}
	return nil
}

func enrollmentCmd(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "enrollment", Aliases: []string{"enrollments"}, Short: "Individual enrollments"}
	var source string
	var pageSize int
	list := &cobra.Command{Use: "list", Short: "List individual enrollments (catalog and API-made)", Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := g.prepare()
			if err != nil {
				return err
			}
			items, err := cl.QueryIndividuals(adminclient.QueryOptions{PageSize: pageSize, Source: source}).All(cmd.Context())
			if err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(g.stdout, nonNilSlice(items))
			}
			t := newTable(g.stdout, "REGISTRATION ID", "DEVICE ID", "ATTESTATION", "STATUS", "ALLOCATION", "HUBS")
			for _, e := range items {
				t.row(e.RegistrationID, e.TargetDeviceID(), e.Attestation.Type, orDefault(e.ProvisioningStatus, "enabled"),
					e.AllocationPolicy, strings.Join(e.IoTHubs, ","))
			}
			return t.flush()
		}}
	list.Flags().StringVar(&source, "source", "", "only entries of this source: catalog or api")
	list.Flags().IntVar(&pageSize, "page-size", 1000, "entries per request")
	list.RegisterFlagCompletionFunc("source", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return []string{"catalog", "api"}, cobra.ShellCompDirectiveNoFileComp
	})

	var withKeys bool
	show := &cobra.Command{Use: "show REGISTRATION_ID", Short: "Show an individual enrollment", Args: exactArgs(1, "REGISTRATION_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := g.prepare()
			if err != nil {
				return err
			}
			e, src, err := cl.Individual(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if withKeys {
				a, err := cl.AttestationMechanism(cmd.Context(), adminclient.Individuals, args[0])
				if err != nil {
					return err
				}
				e.Attestation = *a
			}
			return g.showEntry(e, src)
		}}
	show.Flags().BoolVar(&withKeys, "keys", false, "include the symmetric keys (read through attestationmechanism)")

	var ef enrollmentFlags
	var regID string
	create := &cobra.Command{Use: "create (--registration-id ID [flags] | -f FILE)", Short: "Create an individual enrollment", Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var e enrollment.Individual
			if ef.file != "" {
				if err := readEntry(ef.file, &e); err != nil {
					return err
				}
			} else {
				if regID == "" {
					return usageErr("give --registration-id or -f FILE")
				}
				common, err := ef.common()
				if err != nil {
					return err
				}
				e = enrollment.Individual{RegistrationID: regID, DeviceID: ef.deviceID, Common: common}
			}
			cl, err := g.prepare()
			if err != nil {
				return err
			}
			out, err := cl.PutIndividual(cmd.Context(), &e, "")
			if err != nil {
				return err
			}
			return g.showEntry(out, "api")
		}}
	ef.register(create, false)
	create.Flags().StringVar(&regID, "registration-id", "", "the device's registration ID")

	var etag string
	del := &cobra.Command{Use: "delete REGISTRATION_ID", Short: "Delete an API-made individual enrollment", Args: exactArgs(1, "REGISTRATION_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := g.prepare()
			if err != nil {
				return err
			}
			if err := cl.Delete(cmd.Context(), adminclient.Individuals, args[0], etag); err != nil {
				return err
			}
			fmt.Fprintf(g.stderr, "deleted enrollment %s\n", args[0])
			return nil
		}}
	del.Flags().StringVar(&etag, "etag", "", "delete only if the enrollment still has this etag")

	c.AddCommand(list, show, create, del, exportCmd(g))
	return c
}

func groupCmd(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "group", Aliases: []string{"groups"}, Short: "Enrollment groups"}
	list := &cobra.Command{Use: "list", Short: "List enrollment groups (catalog and API-made)", Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := g.prepare()
			if err != nil {
				return err
			}
			items, err := cl.QueryGroups(adminclient.QueryOptions{PageSize: 1000}).All(cmd.Context())
			if err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(g.stdout, nonNilSlice(items))
			}
			t := newTable(g.stdout, "GROUP ID", "ATTESTATION", "PREFIXES", "STATUS", "ALLOCATION", "HUBS")
			for _, e := range items {
				t.row(e.EnrollmentGroupID, e.Attestation.Type, strings.Join(e.RegistrationIDPrefixes, ","), orDefault(e.ProvisioningStatus, "enabled"),
					e.AllocationPolicy, strings.Join(e.IoTHubs, ","))
			}
			return t.flush()
		}}
	var withKeys bool
	show := &cobra.Command{Use: "show GROUP_ID", Short: "Show an enrollment group", Args: exactArgs(1, "GROUP_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := g.prepare()
			if err != nil {
				return err
			}
			e, src, err := cl.Group(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if withKeys {
				a, err := cl.AttestationMechanism(cmd.Context(), adminclient.Groups, args[0])
				if err != nil {
					return err
				}
				e.Attestation = *a
			}
			return g.showEntry(e, src)
		}}
	show.Flags().BoolVar(&withKeys, "keys", false, "include the symmetric keys")
	var ef enrollmentFlags
	var id string
	create := &cobra.Command{Use: "create (--group-id ID [flags] | -f FILE)", Short: "Create an enrollment group", Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var e enrollment.Group
			if ef.file != "" {
				if err := readEntry(ef.file, &e); err != nil {
					return err
				}
			} else {
				if id == "" {
					return usageErr("give --group-id or -f FILE")
				}
				common, err := ef.common()
				if err != nil {
					return err
				}
				e = enrollment.Group{EnrollmentGroupID: id, RegistrationIDPrefixes: ef.prefixes, Common: common}
			}
			cl, err := g.prepare()
			if err != nil {
				return err
			}
			out, err := cl.PutGroup(cmd.Context(), &e, "")
			if err != nil {
				return err
			}
			return g.showEntry(out, "api")
		}}
	ef.register(create, true)
	create.Flags().StringVar(&id, "group-id", "", "the enrollment group ID")
	var etag string
	del := &cobra.Command{Use: "delete GROUP_ID", Short: "Delete an API-made enrollment group", Args: exactArgs(1, "GROUP_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := g.prepare()
			if err != nil {
				return err
			}
			if err := cl.Delete(cmd.Context(), adminclient.Groups, args[0], etag); err != nil {
				return err
			}
			fmt.Fprintf(g.stderr, "deleted enrollment group %s\n", args[0])
			return nil
		}}
	del.Flags().StringVar(&etag, "etag", "", "delete only if the group still has this etag")
	c.AddCommand(list, show, create, del)
	return c
}

// prepare checks the output flag and builds the client.
func (g *globals) prepare() (*adminclient.Client, error) {
	if err := g.checkOutput(); err != nil {
		return nil, err
	}
	return g.client()
}

// showEntry prints one enrollment: JSON, or (table) its JSON too, with the
// source, since its shape is nested.
func (g *globals) showEntry(v any, src string) error {
	if g.output == "json" {
		return printJSON(g.stdout, v)
	}
	if src != "" {
		fmt.Fprintf(g.stdout, "# source: %s\n", src)
	}
	data, err := yaml.Marshal(v)
	if err != nil {
		return err
	}
	_, err = g.stdout.Write(data)
	return err
}

func nonNilSlice[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// exportCmd writes the API-made entries as catalog YAML, so they can move into
// version control; keys go to key files (never inline unless asked).
func exportCmd(g *globals) *cobra.Command {
	var file, keysDir string
	var inline bool
	c := &cobra.Command{Use: "export --file FILE [--keys-dir DIR | --inline-keys]",
		Short: "Write the API-made enrollments and groups as a catalog YAML file",
		Long: `export writes every enrollment and group made through the service API as an
edgeprov catalog (the format of "catalog:" in edgeprovd.yaml). Symmetric keys are
written to one file per entry under --keys-dir (default: "keys" beside the
output file), referenced with keyFile:, or inline with --inline-keys.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return usageErr("--file is required")
			}
			if keysDir == "" {
				keysDir = filepath.Join(filepath.Dir(file), "keys")
			}
			cl, err := g.client()
			if err != nil {
				return err
			}
			return export(cmd.Context(), cl, file, keysDir, inline, g)
		}}
	c.Flags().StringVar(&file, "file", "", "catalog file to write")
	c.Flags().StringVar(&keysDir, "keys-dir", "", "directory for key files")
	c.Flags().BoolVar(&inline, "inline-keys", false, "write keys inline instead of key files")
	return c
}

type catalogDoc struct {
	Version          int                      `yaml:"version"`
	Enrollments      []*enrollment.Individual `yaml:"enrollments,omitempty"`
	EnrollmentGroups []*enrollment.Group      `yaml:"enrollmentGroups,omitempty"`
}

func export(ctx context.Context, cl *adminclient.Client, file, keysDir string, inline bool, g *globals) error {
	inds, err := cl.QueryIndividuals(adminclient.QueryOptions{PageSize: 1000, Source: "api"}).All(ctx)
	if err != nil {
		return err
	}
	groups, err := cl.QueryGroups(adminclient.QueryOptions{PageSize: 1000, Source: "api"}).All(ctx)
	if err != nil {
		return err
	}
	rel, err := filepath.Rel(filepath.Dir(file), keysDir)
	if err != nil {
		rel = keysDir
	}
	keys := func(k adminclient.Kind, prefix, id string, c *enrollment.Common) error {
		if c.Attestation.Type != enrollment.AttestationSymmetricKey {
			return nil
		}
		a, err := cl.AttestationMechanism(ctx, k, id)
		if err != nil {
			return err
		}
		sk := a.SymmetricKey
		if sk == nil {
			return fmt.Errorf("%s has no symmetric keys", id)
		}
		if inline {
			c.Attestation.SymmetricKey = &enrollment.SymmetricKeyAttestation{PrimaryKey: sk.PrimaryKey, SecondaryKey: sk.SecondaryKey}
			return nil
		}
		name := prefix + strings.ToLower(id) + ".key"
		data := sk.PrimaryKey + "\n"
		if sk.SecondaryKey != "" {
			data += sk.SecondaryKey + "\n"
		}
		if err := os.MkdirAll(keysDir, 0o700); err != nil {
			return err
		}
		if err := pki.WriteFileAtomic(filepath.Join(keysDir, name), []byte(data), 0o600); err != nil {
			return err
		}
		c.Attestation.SymmetricKey = &enrollment.SymmetricKeyAttestation{KeyFile: filepath.Join(rel, name)}
		return nil
	}
	for _, e := range inds {
		if err := keys(adminclient.Individuals, "", e.RegistrationID, &e.Common); err != nil {
			return err
		}
	}
	for _, e := range groups {
		if err := keys(adminclient.Groups, "group-", e.EnrollmentGroupID, &e.Common); err != nil {
			return err
		}
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "# edgeprov enrollment catalog exported from %s by edgeprovctl: %d enrollments, %d groups\n", cl.HostName(), len(inds), len(groups))
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(catalogDoc{Version: 1, Enrollments: inds, EnrollmentGroups: groups}); err != nil {
		return err
	}
	if err := pki.WriteFileAtomic(file, b.Bytes(), 0o600); err != nil {
		return err
	}
	fmt.Fprintf(g.stderr, "exported %d enrollments and %d groups to %s\n", len(inds), len(groups), file)
	return nil
}
