package ctl

import (
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/edgeprov/edgeprov/daemon/adminclient"
)

func registrationCmd(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "registration", Aliases: []string{"registrations"}, Short: "Registration records (device registration states)"}
	var group string
	list := &cobra.Command{Use: "list [--group G]", Short: "List registration records, all or of one enrollment group", Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := g.prepare()
			if err != nil {
				return err
			}
			items, err := cl.QueryRegistrations(group, adminclient.QueryOptions{PageSize: 1000}).All(cmd.Context())
			if err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(g.stdout, nonNilSlice(items))
			}
			t := newTable(g.stdout, "REGISTRATION ID", "DEVICE ID", "STATUS", "SUBSTATUS", "HUB", "GROUP", "UPDATED")
			for _, r := range items {
				updated := ""
				if r.LastUpdatedDateTimeUTC != nil {
					updated = r.LastUpdatedDateTimeUTC.Format("2006-01-02 15:04:05Z")
				}
				t.row(r.RegistrationID, r.DeviceID, r.Status, r.Substatus, r.AssignedHub, r.EnrollmentGroupID, updated)
			}
			return t.flush()
		}}
	list.Flags().StringVar(&group, "group", "", "only devices registered through this enrollment group")
	show := &cobra.Command{Use: "show REGISTRATION_ID", Short: "Show a registration record", Args: exactArgs(1, "REGISTRATION_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := g.prepare()
			if err != nil {
				return err
			}
			r, err := cl.Registration(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return g.showEntry(r, "")
		}}
	var etag string
	del := &cobra.Command{Use: "delete REGISTRATION_ID", Short: "Delete a registration record (the device registers afresh next time)", Args: exactArgs(1, "REGISTRATION_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := g.prepare()
			if err != nil {
				return err
			}
			if err := cl.DeleteRegistration(cmd.Context(), args[0], etag); err != nil {
				return err
			}
			fmt.Fprintf(g.stderr, "deleted registration %s\n", args[0])
			return nil
		}}
	del.Flags().StringVar(&etag, "etag", "", "delete only if the record still has this etag")
	c.AddCommand(list, show, del)
	return c
}

func deviceCmd(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "device", Aliases: []string{"devices"}, Short: "Device identities of the local hubs (the embedded registry)"}
	hubs := &cobra.Command{Use: "hubs", Short: "List the linked hubs whose registry edgeprov keeps", Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := g.prepare()
			if err != nil {
				return err
			}
			hs, err := cl.Hubs(cmd.Context())
			if err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(g.stdout, nonNilSlice(hs))
			}
			t := newTable(g.stdout, "HUB")
			for _, h := range hs {
				t.row(h)
			}
			return t.flush()
		}}
	var hub string
	list := &cobra.Command{Use: "list --hub HUB", Short: "List the device identities of a local hub", Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if hub == "" {
				return usageErr("--hub is required (edgeprovctl device hubs lists them)")
			}
			cl, err := g.prepare()
			if err != nil {
				return err
			}
			items, err := cl.QueryDevices(hub, adminclient.QueryOptions{PageSize: 1000}).All(cmd.Context())
			if err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(g.stdout, nonNilSlice(items))
			}
			t := newTable(g.stdout, "DEVICE ID", "AUTH", "KEY", "EDGE", "STATUS", "UPDATED")
			for _, d := range items {
				t.row(d.DeviceID, d.AuthType, d.KeyRef, strconv.FormatBool(d.IoTEdge), d.Status, d.UpdatedAt.UTC().Format("2006-01-02 15:04:05Z"))
			}
			return t.flush()
		}}
	list.Flags().StringVar(&hub, "hub", "", "hub host name")
	show := &cobra.Command{Use: "show --hub HUB DEVICE_ID", Short: "Show a device identity", Args: exactArgs(1, "--hub HUB DEVICE_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if hub == "" {
				return usageErr("--hub is required")
			}
			cl, err := g.prepare()
			if err != nil {
				return err
			}
			d, err := cl.Device(cmd.Context(), hub, args[0])
			if err != nil {
				return err
			}
			return g.showEntry(d, "")
		}}
	show.Flags().StringVar(&hub, "hub", "", "hub host name")
	c.AddCommand(hubs, list, show)
	return c
}
