// cometbft-bootstrap makes a new CometBFT home start at height H without
// p2p state sync: the application already holds the state of height H (a
// snapshot restored offline), and this fills CometBFT's empty state store
// and block store to match, as CometBFT's own state sync does after a
// restore. It is node.BootstrapState of the CometBFT release it is built
// against (go.mod pins v0.39.3, go.v0.38.mod v0.38.26): the light client
// (config.toml's [statesync] rpc_servers, trust_height, trust_hash,
// trust_period; statesync.enable may be false) verifies the headers of H,
// H+1 and H+2, the app hash it gives for H must equal --app-hash, and then
// the state of H and the seen commit of H are written.
//
// Usage:
//
//	cometbft-bootstrap --home DIR --height H --app-hash HEX [--timeout 2m]
//	cometbft-bootstrap --version
//
// CometBFT must not be running on DIR. H must be at most the chain's height
// minus 2 (the light client needs the next two headers). Exit status 0: the
// stores hold height H; 2: bad usage; 1: failed, and the last line of stderr
// says why: "cometbft-bootstrap: error: <what>: <detail>", <what> one of
// usage, config, stores, stores not empty, light client, app hash mismatch,
// cometbft. All but the last are found before anything is written (the
// stores' emptiness is checked first, then the light client's app hash for
// H), so the home is left as it was and the command can be run again;
// "cometbft" is BootstrapState itself failing (a store write, a panic),
// after which the stores may hold part of the state: a new home is needed.
package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"github.com/spf13/viper"

	dbm "github.com/cometbft/cometbft-db"

	cfg "github.com/cometbft/cometbft/config"
	"github.com/cometbft/cometbft/libs/log"
	"github.com/cometbft/cometbft/light"
	"github.com/cometbft/cometbft/node"
	sm "github.com/cometbft/cometbft/state"
	"github.com/cometbft/cometbft/statesync"
	"github.com/cometbft/cometbft/store"
)

const cometModule = "github.com/cometbft/cometbft"

// sourceHash is set at build time (-ldflags "-X main.sourceHash=…") by
// scripts/install-cometbft-bootstrap.sh: a hash of the sources it was built
// from, so the script can tell an installed binary is up to date.
var sourceHash = "unknown"

// failure is an error with its one-word-or-so category.
type failure struct {
	what string
	err  error
}

func (f failure) Error() string { return f.what + ": " + f.err.Error() }

func fail(what string, format string, args ...any) error {
	return failure{what, fmt.Errorf(format, args...)}
}

func main() {
	flags := flag.NewFlagSet("cometbft-bootstrap", flag.ContinueOnError)
	flags.SetOutput(os.Stderr)
	home := flags.String("home", "", "the CometBFT home (config/config.toml, config/genesis.json, data/)")
	height := flags.Uint64("height", 0, "the height whose state the application holds")
	appHashHex := flags.String("app-hash", "", "the application's app hash after block H, hex")
	timeout := flags.Duration("timeout", 2*time.Minute, "give up after this long (the light client's RPC calls)")
	version := flags.Bool("version", false, "print the CometBFT release this tool is built against and exit")
	check := flags.Bool("check", false, "only check (config, empty stores, the light client's app hash for H): write nothing")
	flags.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: cometbft-bootstrap --home DIR --height H --app-hash HEX [--timeout 2m] [--check]\n")
		flags.PrintDefaults()
	}
	if err := flags.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	if *version {
		fmt.Printf("cometbft-bootstrap cometbft %s source %s\n", cometVersion(), sourceHash)
		return
	}
	if flags.NArg() > 0 || *home == "" || *height == 0 || *appHashHex == "" {
		fmt.Fprintln(os.Stderr, "cometbft-bootstrap: error: usage: --home, --height (> 0) and --app-hash are required, nothing else")
		os.Exit(2)
	}
	if err := run(*home, *height, *appHashHex, *timeout, *check); err != nil {
		// One line: the caller shows the last line of stderr.
		msg := strings.ReplaceAll(err.Error(), "\n", " ")
		fmt.Fprintf(os.Stderr, "cometbft-bootstrap: error: %s\n", msg)
		os.Exit(1)
	}
}

// cometVersion is the version of the cometbft module this binary links.
func cometVersion() string {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range info.Deps {
			if dep.Path == cometModule {
				if dep.Replace != nil {
					return dep.Replace.Version
				}
				return dep.Version
			}
		}
	}
	return "unknown"
}

func run(home string, height uint64, appHashHex string, timeout time.Duration, check bool) (err error) {
	appHash, err := hex.DecodeString(strings.TrimPrefix(strings.TrimPrefix(appHashHex, "0x"), "0X"))
	if err != nil || len(appHash) == 0 {
		return fail("usage", "--app-hash %q is not a hex app hash", appHashHex)
	}
	config, err := loadConfig(home)
	if err != nil {
		return err
	}
	if err := checkStores(config); err != nil {
		return err
	}
	// BootstrapState panics on some failures (a store it could not open);
	// they become this tool's one-line error.
	defer func() {
		if p := recover(); p != nil {
			err = fail("cometbft", "%v", p)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := checkAppHash(ctx, config, height, appHash); err != nil {
		return classify(err, ctx, timeout)
	}
	if check {
		fmt.Printf("cometbft-bootstrap: %s can be bootstrapped at height %d, app hash %X (cometbft %s)\n",
			home, height, appHash, cometVersion())
		return nil
	}
	err = node.BootstrapState(ctx, config, cfg.DefaultDBProvider, height, appHash)
	if err != nil {
		err = classify(err, ctx, timeout)
		var f failure
		if errors.As(err, &f) && f.what == "light client" && ctx.Err() == nil {
			// Checked just before; what failed now is most likely a write.
			err = failure{"cometbft", f.err}
		}
		return err
	}
	fmt.Printf("cometbft-bootstrap: %s bootstrapped at height %d, app hash %X (cometbft %s)\n",
		home, height, appHash, cometVersion())
	return nil
}

// classify names what failed in BootstrapState's error.
func classify(err error, ctx context.Context, timeout time.Duration) error {
	var known failure
	if errors.As(err, &known) {
		return known
	}
	text := err.Error()
	switch {
	case strings.Contains(text, "not empty"):
		return failure{"stores not empty", fmt.Errorf("%w (this home already has a state or blocks: "+
			"bootstrap only a new home, whose data/ CometBFT has never run on)", err)}
	case strings.Contains(text, "does not match the provided appHash"):
		return failure{"app hash mismatch", fmt.Errorf("%w (\"expected\" is the chain's, verified by the light client; "+
			"\"got\" is --app-hash: the application's state is not the chain's state at this height)", err)}
	case ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded):
		return failure{"light client", fmt.Errorf("gave up after %s: %w", timeout, err)}
	default:
		// Setting up the light client, or verifying the headers of H, H+1,
		// H+2 and the commit of H (unreachable or disagreeing rpc_servers,
		// a trust hash that is not the chain's, H too recent).
		return failure{"light client", err}
	}
}

// loadConfig reads DIR/config/config.toml as `cometbft start --home DIR`
// does (viper over the defaults, CMT_ environment variables included) and
// checks the [statesync] settings the light client needs, whether or not
// state sync is enabled.
func loadConfig(home string) (*cfg.Config, error) {
	abs, err := filepath.Abs(home)
	if err != nil {
		return nil, fail("config", "%v", err)
	}
	file := filepath.Join(abs, "config", "config.toml")
	if _, err := os.Stat(file); err != nil {
		return nil, fail("config", "%v (is %s a CometBFT home? `cometbft init --home` makes one)", err, home)
	}
	v := viper.New()
	v.SetEnvPrefix("CMT")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_", "-", "_"))
	v.AutomaticEnv()
	v.SetConfigFile(file)
	if err := v.ReadInConfig(); err != nil {
		return nil, fail("config", "reading %s: %v", file, err)
	}
	config := cfg.DefaultConfig()
	if err := v.Unmarshal(config); err != nil {
		return nil, fail("config", "%s: %v", file, err)
	}
	config.SetRoot(abs)
	if err := config.ValidateBasic(); err != nil {
		return nil, fail("config", "error in %s: %v", file, err)
	}
	// The light client's settings, checked as if state sync were enabled.
	ss := *config.StateSync
	ss.Enable = true
	if err := ss.ValidateBasic(); err != nil {
		return nil, fail("config", "[statesync] in %s: %v (bootstrapping needs rpc_servers (two), "+
			"trust_height, trust_hash and trust_period, even with enable = false)", file, err)
	}
	if _, err := os.Stat(config.GenesisFile()); err != nil {
		return nil, fail("config", "%v", err)
	}
	return config, nil
}

// checkStores opens the two stores BootstrapState writes and checks that
// they are empty, so that a store that cannot be opened (CometBFT running
// on this home holds its lock) is reported as such (BootstrapState would
// panic), and a home that already has a state or blocks is refused before
// the light client is asked anything.
func checkStores(config *cfg.Config) error {
	open := func(id string) (dbm.DB, error) {
		db, err := cfg.DefaultDBProvider(&cfg.DBContext{ID: id, Config: config})
		if err != nil {
			return nil, fail("stores", "opening %s.db in %s: %v (is CometBFT running on this home?)",
				id, config.DBDir(), err)
		}
		return db, nil
	}
	blockDB, err := open("blockstore")
	if err != nil {
		return err
	}
	blocks := store.NewBlockStore(blockDB)
	blocksEmpty := blocks.IsEmpty()
	if err := blocks.Close(); err != nil {
		return fail("stores", "closing blockstore.db in %s: %v", config.DBDir(), err)
	}
	stateDB, err := open("state")
	if err != nil {
		return err
	}
	states := sm.NewStore(stateDB, sm.StoreOptions{})
	state, loadErr := states.Load()
	if err := states.Close(); err != nil {
		return fail("stores", "closing state.db in %s: %v", config.DBDir(), err)
	}
	if loadErr != nil {
		return fail("stores", "reading state.db in %s: %v", config.DBDir(), loadErr)
	}
	if !blocksEmpty || !state.IsEmpty() {
		return fail("stores not empty", "%s already has a state (height %d) or blocks: bootstrap only a new home, "+
			"whose data/ CometBFT has never run on", config.DBDir(), state.LastBlockHeight)
	}
	return nil
}

// checkAppHash asks the light client, as BootstrapState does, for the state
// of height and compares its app hash with appHash. (BootstrapState checks
// too, but on a mismatch it returns an error about closing its stores twice
// instead of the mismatch.)
func checkAppHash(ctx context.Context, config *cfg.Config, height uint64, appHash []byte) error {
	genDoc, err := node.DefaultGenesisDocProviderFunc(config)()
	if err != nil {
		return fail("config", "reading the genesis: %v", err)
	}
	genState, err := sm.MakeGenesisState(genDoc)
	if err != nil {
		return fail("config", "the genesis: %v", err)
	}
	logger := log.NewTMLogger(log.NewSyncWriter(os.Stdout)).With("module", "light")
	provider, err := statesync.NewLightClientStateProvider(ctx,
		genState.ChainID, genState.Version, genState.InitialHeight,
		config.StateSync.RPCServers, light.TrustOptions{
			Period: config.StateSync.TrustPeriod,
			Height: config.StateSync.TrustHeight,
			Hash:   config.StateSync.TrustHashBytes(),
		}, logger)
	if err != nil {
		return fmt.Errorf("failed to set up light client state provider: %w", err)
	}
	state, err := provider.State(ctx, height)
	if err != nil {
		return fmt.Errorf("the state of height %d: %w", height, err)
	}
	if !bytes.Equal(state.AppHash, appHash) {
		return failure{"app hash mismatch", fmt.Errorf("the chain's app hash after block %d is %X "+
			"(verified by the light client), --app-hash is %X: the application's state is not the chain's "+
			"state at this height", height, state.AppHash, appHash)}
	}
	return nil
}
