package ctl

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/edgeprov/edgeprov/daemon/adminclient"
	"github.com/edgeprov/edgeprov/daemon/dpsapi"
	"github.com/edgeprov/edgeprov/daemon/enrollment"
	"github.com/edgeprov/edgeprov/daemon/strictyaml"
)

type importOpts struct {
	format    string
	update    bool
	batchSize int
	parallel  int
	progress  string
}

func importCmd(g *globals) *cobra.Command {
	var o importOpts
	c := &cobra.Command{
		Use:   "import FILE",
		Short: "Create enrollments in bulk from a CSV, YAML or JSON file",
		Long: `import reads enrollments from FILE ("-" for standard input) and creates them
through bulk operations of --batch-size entries, showing a progress bar when
standard error is a terminal, then prints how many were created, updated and
failed, with the reason of each failure. With --update, entries that already
exist are replaced; without it they fail.

Formats (by extension, or --format):
  csv   a header row, then one individual enrollment per row. Columns (any
        order, names case-insensitive): registrationId (required), deviceId,
        attestationType (symmetricKey, the default, or tpm), primaryKey,
        secondaryKey (none: the daemon generates keys), endorsementKey,
        storageRootKey, provisioningStatus, allocationPolicy, iotHubs (separated
        by ";"), iotEdge (true/false), tags and desiredProperties (JSON objects).
  yaml  an edgeprov catalog (version: 1, enrollments, enrollmentGroups);
        keyFile paths are relative to the file.
  json  an array of individual enrollments (DPS JSON), or an object with
        "enrollments" and "enrollmentGroups" arrays. Read as a stream.`,
		Args: exactArgs(1, "FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := g.checkOutput(); err != nil {
				return err
			}
			if o.batchSize < 1 || o.parallel < 1 {
				return usageErr("--batch-size and --parallel must be positive")
			}
			cl, err := g.client()
			if err != nil {
				return err
			}
			return runImport(cmd.Context(), cl, args[0], o, g)
		},
	}
	f := c.Flags()
	f.StringVar(&o.format, "format", "", "csv, yaml or json (default: from the file extension)")
	f.BoolVar(&o.update, "update", false, "replace entries that already exist")
	f.IntVar(&o.batchSize, "batch-size", 1000, "entries per bulk operation")
	f.IntVar(&o.parallel, "parallel", 2, "bulk operations in flight at once")
	f.StringVar(&o.progress, "progress", "auto", "progress bar: auto (when stderr is a terminal), always or never")
	c.RegisterFlagCompletionFunc("format", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return []string{"csv", "yaml", "json"}, cobra.ShellCompDirectiveNoFileComp
	})
	return c
}

// importRow is one entry read from the file, or the reason it could not be.
type importRow struct {
	row int // CSV row, YAML line or JSON item number
	ind *enrollment.Individual
	grp *enrollment.Group
	err error
}

// ImportFailure is a row that was not imported.
type ImportFailure struct {
	Row   int    `json:"row"`
	ID    string `json:"id,omitempty"`
	Error string `json:"error"`
}

// ImportSummary is what import reports.
type ImportSummary struct {
	Rows     int             `json:"rows"`
	Created  int             `json:"created"`
	Updated  int             `json:"updated"`
	Failed   int             `json:"failed"`
	Seconds  float64         `json:"seconds"`
	Failures []ImportFailure `json:"failures"`
}

const maxKeptFailures = 1000

type importer struct {
	cl       *adminclient.Client
	o        importOpts
	mu       sync.Mutex
	sum      ImportSummary
	rowsRead atomic.Int64
	rowsDone atomic.Int64
}

func (im *importer) fail(row int, id, reason string) {
	im.mu.Lock()
	defer im.mu.Unlock()
	im.sum.Failed++
	if len(im.sum.Failures) < maxKeptFailures {
		im.sum.Failures = append(im.sum.Failures, ImportFailure{Row: row, ID: id, Error: reason})
	}
}

func runImport(ctx context.Context, cl *adminclient.Client, path string, o importOpts, g *globals) error {
	format := o.format
	if format == "" {
		switch strings.ToLower(filepath.Ext(path)) {
		case ".csv":
			format = "csv"
		case ".yaml", ".yml":
			format = "yaml"
		case ".json":
			format = "json"
		default:
			return usageErr("cannot tell the format of %s: give --format csv, yaml or json", path)
		}
	}
	var in io.Reader = os.Stdin
	var size int64
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return &ExitError{ExitConfig, err}
		}
		defer f.Close()
		if fi, err := f.Stat(); err == nil {
			size = fi.Size()
		}
		in = f
	}
	counted := &countingReader{r: in}
	var read func(func(importRow) error) error
	switch format {
	case "csv":
		read = func(emit func(importRow) error) error { return readCSV(counted, emit) }
	case "json":
		read = func(emit func(importRow) error) error { return readJSON(counted, emit) }
	case "yaml":
		read = func(emit func(importRow) error) error { return readYAML(counted, path, emit) }
	default:
		return usageErr("--format must be csv, yaml or json")
	}

	im := &importer{cl: cl, o: o}
	start := time.Now()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopProgress := startProgress(g.stderr, o.progress, size, counted, im, start)

	type batch struct {
		rows []importRow
	}
	batches := make(chan batch, o.parallel)
	var readErr error
	go func() {
		defer close(batches)
		var inds, grps []importRow
		flush := func(b *[]importRow) {
			if len(*b) > 0 {
				select {
				case batches <- batch{*b}:
				case <-ctx.Done():
				}
				*b = nil
			}
		}
		readErr = read(func(r importRow) error {
			im.rowsRead.Add(1)
			switch {
			case r.err != nil:
				im.fail(r.row, rowID(r), r.err.Error())
				im.rowsDone.Add(1)
			case r.grp != nil:
				if grps = append(grps, r); len(grps) == o.batchSize {
					flush(&grps)
				}
			default:
				if inds = append(inds, r); len(inds) == o.batchSize {
					flush(&inds)
				}
			}
			return ctx.Err()
		})
		flush(&grps)
		flush(&inds)
	}()
	var wg sync.WaitGroup
	var sendErr error
	var once sync.Once
	for range o.parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range batches {
				if err := im.send(ctx, b.rows); err != nil {
					once.Do(func() { sendErr = err; cancel() })
				}
			}
		}()
	}
	wg.Wait()
	stopProgress()
	im.sum.Rows = int(im.rowsRead.Load())
	im.sum.Seconds = time.Since(start).Seconds()
	if sendErr != nil {
		return fmt.Errorf("import stopped after %d rows: %w", im.rowsDone.Load(), sendErr)
	}
	if readErr != nil && !errors.Is(readErr, context.Canceled) {
		return &ExitError{ExitConfig, fmt.Errorf("import stopped after %d rows: %w", im.sum.Rows, readErr)}
	}
	if err := printSummary(g, &im.sum); err != nil {
		return err
	}
	if im.sum.Failed > 0 {
		return &ExitError{ExitFail, fmt.Errorf("%d of %d rows failed", im.sum.Failed, im.sum.Rows)}
	}
	return nil
}

func rowID(r importRow) string {
	switch {
	case r.ind != nil:
		return r.ind.RegistrationID
	case r.grp != nil:
		return r.grp.EnrollmentGroupID
	}
	return ""
}

// send creates a batch (all individuals or all groups); with --update the
// entries that exist are replaced in a second bulk operation.
func (im *importer) send(ctx context.Context, rows []importRow) error {
	defer im.rowsDone.Add(int64(len(rows)))
	group := rows[0].grp != nil
	bulk := func(mode string, rs []importRow) (*adminclient.BulkResult, error) {
		if group {
			items := make([]*enrollment.Group, len(rs))
			for i, r := range rs {
				items[i] = r.grp
			}
			return im.cl.BulkGroups(ctx, mode, items)
		}
		items := make([]*enrollment.Individual, len(rs))
		for i, r := range rs {
			items[i] = r.ind
		}
		return im.cl.BulkIndividuals(ctx, mode, items)
	}
	byID := func(rs []importRow) map[string]importRow {
		m := make(map[string]importRow, len(rs))
		for _, r := range rs {
			m[strings.ToLower(rowID(r))] = r
		}
		return m
	}
	res, err := bulk("create", rows)
	var ae *adminclient.Error
	if errors.As(err, &ae) { // the request as a whole was refused
		for _, r := range rows {
			im.fail(r.row, rowID(r), ae.Message)
		}
		return nil
	} else if err != nil {
		return err
	}
	ids := byID(rows)
	var exist []importRow
	failed := 0
	for _, e := range res.Errors {
		id := e.RegistrationID + e.EnrollmentGroupID
		r := ids[strings.ToLower(id)]
		if e.ErrorCode == dpsapi.CodeConflict && im.o.update {
			exist = append(exist, r)
			continue
		}
		failed++
		im.fail(r.row, id, e.ErrorStatus)
	}
	im.mu.Lock()
	im.sum.Created += len(rows) - len(exist) - failed
	im.mu.Unlock()
	if len(exist) == 0 {
		return nil
	}
	res, err = bulk("update", exist)
	if errors.As(err, &ae) {
		for _, r := range exist {
			im.fail(r.row, rowID(r), ae.Message)
		}
		return nil
	} else if err != nil {
		return err
	}
	ids = byID(exist)
	for _, e := range res.Errors {
		id := e.RegistrationID + e.EnrollmentGroupID
		im.fail(ids[strings.ToLower(id)].row, id, e.ErrorStatus)
	}
	im.mu.Lock()
	im.sum.Updated += len(exist) - len(res.Errors)
	im.mu.Unlock()
	return nil
}

func printSummary(g *globals, s *ImportSummary) error {
	if s.Failures == nil {
		s.Failures = []ImportFailure{}
	}
	if g.output == "json" {
		return printJSON(g.stdout, s)
	}
	rate := 0.0
	if s.Seconds > 0 {
		rate = float64(s.Rows) / s.Seconds
	}
	fmt.Fprintf(g.stdout, "rows: %d  created: %d  updated: %d  failed: %d  (%.1fs, %.0f rows/s)\n", s.Rows, s.Created, s.Updated, s.Failed, s.Seconds, rate)
	if len(s.Failures) > 0 {
		t := newTable(g.stdout, "ROW", "ID", "REASON")
		for _, f := range s.Failures {
			t.row(strconv.Itoa(f.Row), f.ID, f.Error)
		}
		t.flush()
		if s.Failed > len(s.Failures) {
			fmt.Fprintf(g.stdout, "(%d more failures not listed)\n", s.Failed-len(s.Failures))
		}
	}
	return nil
}

// --- readers ---

type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

var csvColumns = []string{"registrationid", "deviceid", "attestationtype", "primarykey", "secondarykey", "endorsementkey",
	"storagerootkey", "provisioningstatus", "allocationpolicy", "iothubs", "iotedge", "tags", "desiredproperties"}

func readCSV(r io.Reader, emit func(importRow) error) error {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	cr.ReuseRecord = true
	header, err := cr.Read()
	if err != nil {
		return fmt.Errorf("CSV header: %w", err)
	}
	col := map[string]int{}
	for i, h := range header {
		name := strings.ToLower(strings.TrimSpace(strings.TrimPrefix(h, "\ufeff")))
		known := false
		for _, c := range csvColumns {
			known = known || c == name
		}
		if !known {
			return fmt.Errorf("CSV header: unknown column %q (known: registrationId, deviceId, attestationType, primaryKey, secondaryKey, endorsementKey, storageRootKey, provisioningStatus, allocationPolicy, iotHubs, iotEdge, tags, desiredProperties)", h)
		}
		col[name] = i
	}
	if _, ok := col["registrationid"]; !ok {
		return errors.New("CSV header: a registrationId column is required")
	}
	for row := 2; ; row++ {
		rec, err := cr.Read()
		if err == io.EOF {
			return nil
		}
		var pe *csv.ParseError
		if errors.As(err, &pe) && pe.Err == csv.ErrFieldCount {
			err = nil
		}
		if err != nil {
			if errors.As(err, &pe) {
				if e := emit(importRow{row: row, err: err}); e != nil {
					return e
				}
				continue
			}
			return err
		}
		get := func(name string) string {
			if i, ok := col[name]; ok && i < len(rec) {
				return strings.TrimSpace(rec[i])
			}
			return ""
		}
		e, err := csvEnrollment(get)
		if err := emit(importRow{row: row, ind: e, err: err}); err != nil {
			return err
		}
	}
}

func csvEnrollment(get func(string) string) (*enrollment.Individual, error) {
	e := &enrollment.Individual{RegistrationID: get("registrationid"), DeviceID: get("deviceid")}
	if e.RegistrationID == "" {
		return nil, errors.New("registrationId is empty")
	}
	c := &e.Common
	c.ProvisioningStatus, c.AllocationPolicy = get("provisioningstatus"), get("allocationpolicy")
	switch t := get("attestationtype"); t {
	case "", enrollment.AttestationSymmetricKey:
		c.Attestation = enrollment.Attestation{Type: enrollment.AttestationSymmetricKey,
			SymmetricKey: &enrollment.SymmetricKeyAttestation{PrimaryKey: get("primarykey"), SecondaryKey: get("secondarykey")}}
	case enrollment.AttestationTPM:
		c.Attestation = enrollment.Attestation{Type: enrollment.AttestationTPM,
			TPM: &enrollment.TPMAttestation{EndorsementKey: get("endorsementkey"), StorageRootKey: get("storagerootkey")}}
	default:
		return e, fmt.Errorf("attestationType %q: use symmetricKey or tpm (X.509 enrollments: JSON or YAML)", t)
	}
	if hubs := get("iothubs"); hubs != "" {
		for _, h := range strings.Split(hubs, ";") {
			if h = strings.TrimSpace(h); h != "" {
				c.IoTHubs = append(c.IoTHubs, h)
			}
		}
	}
	if v := get("iotedge"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return e, fmt.Errorf("iotEdge %q is not true or false", v)
		}
		c.Capabilities = &enrollment.Capabilities{IoTEdge: b}
	}
	tags, desired := get("tags"), get("desiredproperties")
	if tags != "" || desired != "" {
		c.InitialTwin = &enrollment.InitialTwin{}
		if tags != "" {
			if err := json.Unmarshal([]byte(tags), &c.InitialTwin.Tags); err != nil {
				return e, fmt.Errorf("tags is not a JSON object: %w", err)
			}
		}
		if desired != "" {
			c.InitialTwin.Properties = &enrollment.InitialTwinProperties{}
			if err := json.Unmarshal([]byte(desired), &c.InitialTwin.Properties.Desired); err != nil {
				return e, fmt.Errorf("desiredProperties is not a JSON object: %w", err)
			}
		}
	}
	return e, nil
}

// readJSON streams an array of enrollments, or an object of arrays, without
// holding the file in memory.
func readJSON(r io.Reader, emit func(importRow) error) error {
	dec := json.NewDecoder(r)
	tok, err := dec.Token()
	if err != nil {
		return fmt.Errorf("JSON: %w", err)
	}
	n := 0
	items := func(group bool) error {
		if t, err := dec.Token(); err != nil || t != json.Delim('[') {
			return fmt.Errorf("JSON: expected an array at byte %d", dec.InputOffset())
		}
		for dec.More() {
			n++
			row := importRow{row: n}
			if group {
				row.grp = &enrollment.Group{}
				row.err = dec.Decode(row.grp)
			} else {
				row.ind = &enrollment.Individual{}
				row.err = dec.Decode(row.ind)
			}
			if fatalJSON(row.err) {
				return fmt.Errorf("JSON item %d: %w", n, row.err) // a stream cannot resynchronise
			}
			if err := emit(row); err != nil {
				return err
			}
		}
		_, err := dec.Token()
		return err
	}
	switch tok {
	case json.Delim('['):
		for dec.More() {
			n++
			row := importRow{row: n, ind: &enrollment.Individual{}}
			row.err = dec.Decode(row.ind)
			if fatalJSON(row.err) {
				return fmt.Errorf("JSON item %d: %w", n, row.err) // a stream cannot resynchronise
			}
			if err := emit(row); err != nil {
				return err
			}
		}
		return nil
	case json.Delim('{'):
		for dec.More() {
			k, err := dec.Token()
			if err != nil {
				return err
			}
			switch k {
			case "enrollments":
				err = items(false)
			case "enrollmentGroups":
				err = items(true)
			case "version":
				var v any
				err = dec.Decode(&v)
			default:
				return fmt.Errorf("JSON: unknown field %v (enrollments, enrollmentGroups)", k)
			}
			if err != nil {
				return err
			}
		}
		return nil
	}
	return errors.New("JSON: expected an array of enrollments or an object with enrollments and enrollmentGroups")
}

// fatalJSON: only a value of the wrong type leaves the decoder where the next
// item starts; after a syntax error or a truncated file it cannot go on.
func fatalJSON(err error) bool {
	var te *json.UnmarshalTypeError
	return err != nil && !errors.As(err, &te)
}

// readYAML reads a catalog-format file; each entry fails or passes alone.
func readYAML(r io.Reader, path string, emit func(importRow) error) error {
	data, err := io.ReadAll(io.LimitReader(r, strictyaml.MaxFileSize+1))
	if err != nil {
		return err
	}
	var doc catalogDoc
	d, err := strictyaml.Decode(path, data, &doc, 1)
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	keyFile := func(c *enrollment.Common) error {
		sk := c.Attestation.SymmetricKey
		if sk == nil || sk.KeyFile == "" {
			return nil
		}
		name := sk.KeyFile
		if !filepath.IsAbs(name) {
			name = filepath.Join(dir, name)
		}
		kd, err := os.ReadFile(name)
		if err != nil {
			return err
		}
		var lines []string
		for _, l := range strings.Split(string(kd), "\n") {
			if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
				lines = append(lines, l)
			}
		}
		if len(lines) == 0 {
			return fmt.Errorf("%s holds no key", sk.KeyFile)
		}
		sk.PrimaryKey, sk.KeyFile = lines[0], ""
		if len(lines) > 1 {
			sk.SecondaryKey = lines[1]
		}
		return nil
	}
	for i, g := range doc.EnrollmentGroups {
		if g == nil {
			continue
		}
		if err := emit(importRow{row: d.Line(fmt.Sprintf("enrollmentGroups[%d]", i)), grp: g, err: keyFile(&g.Common)}); err != nil {
			return err
		}
	}
	for i, e := range doc.Enrollments {
		if e == nil {
			continue
		}
		if err := emit(importRow{row: d.Line(fmt.Sprintf("enrollments[%d]", i)), ind: e, err: keyFile(&e.Common)}); err != nil {
			return err
		}
	}
	return nil
}
