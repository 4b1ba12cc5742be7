// Command ferretdb starts FerretDB v1 through its embeddable package.
//
// The upstream command cannot be built with `go install` from the module proxy
// (its version file is generated at release time), so the services script
// builds this small launcher instead. It serves the MongoDB wire protocol on
// loopback with the SQLite (default) or PostgreSQL backend, in plain TCP
// and/or TLS.
package main

import (
	"context"
	"flag"
	"log"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func main() {
	listen := flag.String("listen-addr", "127.0.0.1:27018", "TCP address to listen on")
	handler := flag.String("handler", "sqlite", "backend: sqlite or postgresql")
	sqliteURL := flag.String("sqlite-url", "file:data/", "SQLite directory URI (sqlite backend)")
	pgURL := flag.String("postgresql-url", "", "PostgreSQL URL (postgresql backend)")
	level := flag.String("log-level", "warn", "log level: debug, info, warn, error")
	listenTLS := flag.String("listen-tls", "", "TLS address to listen on (off when empty)")
	tlsCert := flag.String("tls-cert-file", "", "server certificate (PEM) of the TLS listener")
	tlsKey := flag.String("tls-key-file", "", "server key (PEM) of the TLS listener")
	tlsCA := flag.String("tls-ca-file", "", "CA (PEM) that client certificates must chain to; when set, clients must present one")
	flag.Parse()

	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		log.Fatalf("bad -log-level: %v", err)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))

	f, err := ferretdb.New(&ferretdb.Config{
		Listener: ferretdb.ListenerConfig{
			TCP:         *listen,
			TLS:         *listenTLS,
			TLSCertFile: *tlsCert,
			TLSKeyFile:  *tlsKey,
			TLSCAFile:   *tlsCA,
		},
		Logger:        logger,
		Handler:       *handler,
		SQLiteURL:     *sqliteURL,
		PostgreSQLURL: *pgURL,
	})
	if err != nil {
		log.Fatal(err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	logger.Info("listening", "uri", f.MongoDBURI())
	if err := f.Run(ctx); err != nil {
		log.Fatal(err)
	}
}
