package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/osguard/osguard/attest/agent"
	"github.com/osguard/osguard/attest/api"
	"github.com/osguard/osguard/attest/client"
	"github.com/osguard/osguard/attest/server"
	"github.com/osguard/osguard/attest/store"
	"github.com/osguard/osguard/attest/verdict"
)

func init() { register(newAttestCmd) }

func newAttestCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "attest",
		Short: "Remote attestation: the verifier, its admin client and the node agent",
		Long: `attest proves to a verifier that a node booted a registered osguard image.

  serve    the verifier: JSON API, HTML fleet page, SQLite or PostgreSQL
  policy   register (add) or remove (rm) an image version's measurements.json
  nodes    list the fleet: node, image, version, state, reason, last seen
  agent    on a node: EK certificate, AK, quote over PCRs 0-15, event log`,
	}
	cmd.AddCommand(newAttestServeCmd(), newAttestPolicyCmd(), newAttestNodesCmd(), newAttestAgentCmd())
	return cmd
}

func newAttestServeCmd() *cobra.Command {
	var listen, dsn, tokenFile, tlsCert, tlsKey string
	var useTLS bool
	var ekCAs []string
	cmd := &cobra.Command{
		Use:   "serve --listen ADDR --db DSN --token-file FILE [--tls] [--ek-ca FILE...]",
		Short: "Run the verifier",
		Long: `serve runs the attestation verifier.

--db is sqlite:PATH (embedded) or postgres://USER@HOST/DB; several verifiers on
one PostgreSQL database are stateless replicas. --token-file holds the admin
bearer token on one line; it is created (mode 0600) with a random token when
absent. --ek-ca names the PEM CA certificates that node EK certificates must
chain to (for nodes started by 'osguard run DIR', DIR/tpm-ca/issuercert.pem).
With --tls the verifier serves HTTPS with the certificate in --tls-cert and
--tls-key, a self-signed one being created at the first start (default: next
to the token file, verifier.crt and verifier.key); clients trust it with --ca.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			tok, created, err := server.LoadOrCreateToken(tokenFile)
			if err != nil {
				return err
			}
			if created {
				fmt.Fprintf(cmd.ErrOrStderr(), "created the admin token in %s (mode 0600)\n", tokenFile)
			}
			if len(ekCAs) == 0 {
				fmt.Fprintln(cmd.ErrOrStderr(), "warning: no --ek-ca: no node can enroll")
			} else if _, err := server.LoadEKRoots(ekCAs); err != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: %v (read again at each enrollment)\n", err)
			}
			st, err := store.Open(ctx, dsn)
			if err != nil {
				return err
			}
			defer st.Close()
			srv := &server.Server{Store: st, EKCAFiles: ekCAs, Token: tok, Log: log.New(cmd.ErrOrStderr(), "verifier: ", log.LstdFlags)}
			// A long IdleTimeout: a node behind QEMU's guestfwd shares one
			// connection for all its requests, and a closed one loses the
			// next request while QEMU reconnects.
			hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: time.Minute,
				WriteTimeout: time.Minute, IdleTimeout: 15 * time.Minute}
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return err
			}
			scheme := "http"
			if useTLS {
				dir := filepath.Dir(tokenFile)
				if tlsCert == "" {
					tlsCert = filepath.Join(dir, "verifier.crt")
				}
				if tlsKey == "" {
					tlsKey = filepath.Join(dir, "verifier.key")
				}
				host, _, _ := net.SplitHostPort(listen)
				c, made, err := server.LoadOrCreateTLS(tlsCert, tlsKey, []string{host})
				if err != nil {
					return err
				}
				if made {
					fmt.Fprintf(cmd.ErrOrStderr(), "created a self-signed TLS certificate %s (key %s, mode 0600)\n", tlsCert, tlsKey)
				}
				ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{c}, MinVersion: tls.VersionTLS12})
				scheme = "https"
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "verifier listening on %s://%s (database %s)\n", scheme, ln.Addr(), dsnKind(dsn))
			go func() {
				<-ctx.Done()
				sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				hs.Shutdown(sctx)
			}()
			go func() {
				t := time.NewTicker(time.Minute)
				defer t.Stop()
				for {
					select {
					case <-ctx.Done():
						return
					case <-t.C:
						st.Prune(ctx)
					}
				}
			}()
			if err := hs.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", "127.0.0.1:8443", "address to listen on")
	f.StringVar(&dsn, "db", "", "database: sqlite:PATH or postgres://...")
	f.StringVar(&tokenFile, "token-file", "", "admin bearer token file (created when absent)")
	f.BoolVar(&useTLS, "tls", false, "serve HTTPS (a self-signed certificate is created at the first start)")
	f.StringVar(&tlsCert, "tls-cert", "", "TLS certificate (default: verifier.crt next to the token file)")
	f.StringVar(&tlsKey, "tls-key", "", "TLS key (default: verifier.key next to the token file)")
	f.StringArrayVar(&ekCAs, "ek-ca", nil, "PEM CA certificate EK certificates must chain to (repeatable)")
	cmd.MarkFlagRequired("db")
	cmd.MarkFlagRequired("token-file")
	return cmd
}

func dsnKind(dsn string) string {
	if len(dsn) > 7 && dsn[:7] == "sqlite:" {
		return dsn
	}
	return "PostgreSQL"
}

// adminFlags are the flags of the admin client commands.
type adminFlags struct {
	verifier, tokenFile, ca string
}

func (a *adminFlags) add(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&a.verifier, "verifier", "", "the verifier's URL, e.g. http://127.0.0.1:8443")
	f.StringVar(&a.tokenFile, "token-file", "", "file holding the admin bearer token")
	f.StringVar(&a.ca, "ca", "", "PEM certificate to trust for an https verifier")
	cmd.MarkFlagRequired("verifier")
	cmd.MarkFlagRequired("token-file")
}

func (a *adminFlags) client() (*client.Admin, error) {
	b, err := readInput("--token-file", a.tokenFile)
	if err != nil {
		return nil, failWith(2, err)
	}
	tok, _, err := server.ParseToken(b, a.tokenFile)
	if err != nil {
		return nil, failWith(2, err)
	}
	hc, err := httpClient(a.ca)
	if err != nil {
		return nil, err
	}
	return &client.Admin{URL: a.verifier, Token: tok, HTTP: hc}, nil
}

func httpClient(caPath string) (*http.Client, error) {
	var ca []byte
	if caPath != "" {
		var err error
		if ca, err = readInput("--ca", caPath); err != nil {
			return nil, failWith(2, err)
		}
	}
	return client.New(ca)
}

func newAttestPolicyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Register or remove image versions the verifier trusts",
	}
	var af, rf, lf adminFlags
	add := &cobra.Command{
		Use:   "add --verifier URL --token-file F DIR/measurements.json",
		Short: "Trust the image version a build's measurements.json describes",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := readInput("", args[0])
			if err != nil {
				return failWith(2, err)
			}
			if _, err := verdict.ParsePolicy(b); err != nil {
				return failWith(2, fmt.Errorf("%s: %w", args[0], err))
			}
			c, err := af.client()
			if err != nil {
				return err
			}
			id, err := c.AddPolicy(cmd.Context(), b)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "registered %s version %s\n", id.Image, id.Version)
			return nil
		},
	}
	af.add(add)
	rm := &cobra.Command{
		Use:   "rm --verifier URL --token-file F (DIR/measurements.json | IMAGE VERSION)",
		Short: "Stop trusting an image version",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			img, ver := "", ""
			if len(args) == 2 {
				img, ver = args[0], args[1]
			} else {
				b, err := readInput("", args[0])
				if err != nil {
					return failWith(2, err)
				}
				p, err := verdict.ParsePolicy(b)
				if err != nil {
					return failWith(2, fmt.Errorf("%s: %w", args[0], err))
				}
				img, ver = p.Image, p.Version
			}
			c, err := rf.client()
			if err != nil {
				return err
			}
			if err := c.RemovePolicy(cmd.Context(), img, ver); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed %s version %s\n", img, ver)
			return nil
		},
	}
	rf.add(rm)
	var jsonOut bool
	ls := &cobra.Command{
		Use:   "list --verifier URL --token-file F [--json]",
		Short: "List the registered image versions",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := lf.client()
			if err != nil {
				return err
			}
			ps, err := c.Policies(cmd.Context())
			if err != nil {
				return err
			}
			if jsonOut {
				return writeJSONOut(cmd, ps)
			}
			for _, p := range ps {
				fmt.Fprintf(cmd.OutOrStdout(), "%s\t%s\n", p.Image, p.Version)
			}
			return nil
		},
	}
	lf.add(ls)
	ls.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	cmd.AddCommand(add, rm, ls)
	return cmd
}

func writeJSONOut(cmd *cobra.Command, v any) error {
	e := json.NewEncoder(cmd.OutOrStdout())
	e.SetIndent("", "  ")
	return e.Encode(v)
}

func newAttestNodesCmd() *cobra.Command {
	var af adminFlags
	var jsonOut bool
	cmd := &cobra.Command{
		Use:   "nodes --verifier URL --token-file F [--json]",
		Short: "List the nodes the verifier knows, untrusted first",
		Long: `nodes prints one row per node: node (derived from its EK), image, version,
state (trusted or untrusted), reason and lastSeen. --json prints the same as a
JSON array with those field names.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := af.client()
			if err != nil {
				return err
			}
			ns, err := c.Nodes(cmd.Context())
			if err != nil {
				return err
			}
			if jsonOut {
				return writeJSONOut(cmd, ns)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NODE\tIMAGE\tVERSION\tSTATE\tLAST SEEN\tREASON")
			for _, n := range ns {
				seen := "never"
				if n.LastSeen.Unix() > 0 {
					seen = n.LastSeen.Format(time.RFC3339)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", n.Node, dash(n.Image), dash(n.Version), n.State, seen, n.Reason)
			}
			return tw.Flush()
		},
	}
	af.add(cmd)
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	return cmd
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func newAttestAgentCmd() *cobra.Command {
	var once bool
	var verifierURL, ca, configPath string
	var interval time.Duration
	cmd := &cobra.Command{
		Use:   "agent [--once] [--verifier URL]",
		Short: "Attest this node to the verifier (on a node)",
		Long: `agent proves this node's boot to the verifier: it sends the TPM's EK
certificate, binds a new attestation key to the EK (MakeCredential /
ActivateCredential), and sends a quote over PCRs 0-15 (sha256) with the
firmware's event log, over a fresh nonce from the verifier.

With --once it attests once and exits 0 when the verifier says trusted, 1
otherwise. Without it, it attests at start and then every --interval.
--verifier defaults to the image's spec.attestation (` + agent.ConfigPath + `).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if verifierURL == "" || (!cmd.Flags().Changed("interval") && !once) {
				c, err := agent.LoadConfig(configPath)
				if err != nil && verifierURL == "" {
					return failWith(2, fmt.Errorf("no --verifier, and %w", err))
				}
				if err == nil {
					if verifierURL == "" {
						verifierURL = c.Verifier
					}
					if d, perr := time.ParseDuration(c.Interval); perr == nil && d > 0 && !cmd.Flags().Changed("interval") {
						interval = d
					}
				}
			}
			if interval <= 0 {
				return failWith(2, fmt.Errorf("--interval %v: must be positive", interval))
			}
			hc, err := httpClient(ca)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			a := &agent.Agent{Verifier: verifierURL, Client: hc}
			defer a.Close()
			out := cmd.OutOrStdout()
			for {
				v, err := attestRetrying(ctx, a, hc, cmd.ErrOrStderr())
				switch {
				case err != nil:
					fmt.Fprintf(cmd.ErrOrStderr(), "osguard attest agent: %v\n", err)
				default:
					fmt.Fprintf(out, "node %s: %s", v.Node, v.State)
					if v.Image != "" {
						fmt.Fprintf(out, " (%s %s)", v.Image, v.Version)
					}
					if v.Reason != "" {
						fmt.Fprintf(out, ": %s", v.Reason)
					}
					fmt.Fprintln(out)
				}
				if once {
					if err != nil || v.State != api.Trusted {
						return failWith(1, nil)
					}
					return nil
				}
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(interval):
				}
			}
		},
	}
	f := cmd.Flags()
	f.BoolVar(&once, "once", false, "attest once; exit 0 when trusted, 1 otherwise")
	f.StringVar(&verifierURL, "verifier", "", "the verifier's URL (default: from "+agent.ConfigPath+")")
	f.StringVar(&ca, "ca", "", "PEM certificate to trust for an https verifier")
	f.DurationVar(&interval, "interval", 5*time.Minute, "time between attestations without --once")
	f.StringVar(&configPath, "config", agent.ConfigPath, "the agent's settings file")
	f.MarkHidden("config")
	return cmd
}

// attestRetrying runs one attestation, trying again after 1, 2 and 4
// seconds when the verifier cannot be reached (the network may not be up
// at boot, and QEMU's guestfwd drops what arrives while it reconnects). An
// answer from the verifier, even an error, is final.
func attestRetrying(ctx context.Context, a *agent.Agent, hc *http.Client, log io.Writer) (*api.Verdict, error) {
	delay := time.Second
	for try := 1; ; try++ {
		v, err := a.Attest(ctx)
		// QEMU's guestfwd carries one connection at a time: leave none open.
		hc.CloseIdleConnections()
		var he *client.HTTPError
		if err == nil || errors.As(err, &he) || try == 4 || ctx.Err() != nil {
			return v, err
		}
		fmt.Fprintf(log, "osguard attest agent: %v; again in %v\n", err, delay)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(delay):
		}
		delay *= 2
	}
}
