package interop_test

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// pgServer is a real PostgreSQL from Debian's packages, initialised in a
// fresh data directory, started by the test on a loopback port (as the
// postgres user: the server refuses to run as root) and stopped at cleanup.
type pgServer struct {
	Addr string
}

// startPostgres finds (or, as root, installs) Debian's PostgreSQL, runs
// initdb with trust authentication and starts the server with the extra
// settings ("name=value").
func startPostgres(t *testing.T, settings ...string) *pgServer {
	t.Helper()
	bin := findPostgresBin(t)
	cred := postgresCredential(t)
	dir, err := os.MkdirTemp("", "lifeline-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")

	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	initdb.Dir = dir
	if out, err := initdb.CombinedOutput(); err != nil {
		t.Fatalf("interop: initdb: %v\n%s", err, out)
	}

	port := freePort(t)
	args := []string{"-D", data, "-h", "127.0.0.1", "-p", strconv.Itoa(port), "-k", dir,
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"}
	for _, s := range settings {
		args = append(args, "-c", s)
	}
	cmd := exec.Command(filepath.Join(bin, "postgres"), args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	cmd.Dir = dir
	s := &pgServer{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
	runServer(t, "postgres", cmd, syscall.SIGINT /* fast shutdown */, 30*time.Second, func() error {
		_, err := s.query("SELECT 1")
		return err
	})
	return s
}

// findPostgresBin returns Debian's PostgreSQL bin directory, installing the
// package when it is missing and the test may.
func findPostgresBin(t *testing.T) string {
	t.Helper()
	find := func() string {
		m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
		if len(m) == 0 {
			return ""
		}
		return filepath.Dir(m[len(m)-1])
	}
	if bin := find(); bin != "" {
		return bin
	}
	aptInstall(t, "postgresql")
	if bin := find(); bin != "" {
		return bin
	}
	t.Fatal("interop: postgresql installed but no /usr/lib/postgresql/*/bin/postgres")
	return ""
}

// postgresCredential is the postgres system user's, which Debian's package
// creates; the server will not run as root.
func postgresCredential(t *testing.T) *syscall.Credential {
	t.Helper()
	u, err := user.Lookup("postgres")
	if err != nil {
		t.Skipf("interop: no postgres system user to run the server as: %v", err)
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	if os.Geteuid() != 0 && uint64(os.Geteuid()) != uid {
		t.Skip("interop: running PostgreSQL needs root (to switch to the postgres user) or the postgres user itself")
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
}

// query runs one simple query on a fresh connection and returns the first
// column of the first row.
func (s *pgServer) query(sql string) (string, error) {
	c, err := net.DialTimeout("tcp", s.Addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	if err := pgStartup(c, r); err != nil {
		return "", err
	}
	return pgQuery(c, r, sql)
}

// pgSession is one connection to the server that runs queries one after
// the other.
type pgSession struct {
	c net.Conn
	r *bufio.Reader
}

// session opens a session, closed when the test ends.
func (s *pgServer) session(t *testing.T) *pgSession {
	t.Helper()
	c, err := net.DialTimeout("tcp", s.Addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ps := &pgSession{c: c, r: bufio.NewReader(c)}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if err := pgStartup(c, ps.r); err != nil {
		t.Fatalf("postgres session: %v", err)
	}
	return ps
}

// query runs sql and returns the first column of the first row.
func (ps *pgSession) query(sql string) (string, error) {
	_ = ps.c.SetDeadline(time.Now().Add(5 * time.Second))
	return pgQuery(ps.c, ps.r, sql)
}

// pgError is an ErrorResponse from the server: SQLSTATE code and message.
type pgError struct{ Code, Message string }

func (e *pgError) Error() string { return "postgres: " + e.Code + ": " + e.Message }

// pgStartup sends the protocol 3.0 StartupMessage for user and database
// postgres and reads until ReadyForQuery. Trust authentication is expected.
func pgStartup(w io.Writer, r *bufio.Reader) error {
	params := "user\x00postgres\x00database\x00postgres\x00\x00"
	msg := make([]byte, 8, 8+len(params))
	binary.BigEndian.PutUint32(msg[0:], uint32(8+len(params)))
	binary.BigEndian.PutUint32(msg[4:], 196608) // protocol 3.0
	msg = append(msg, params...)
	if _, err := w.Write(msg); err != nil {
		return err
	}
	for {
		typ, body, err := pgRead(r)
		if err != nil {
			return err
		}
		switch typ {
		case 'R':
			if len(body) < 4 || binary.BigEndian.Uint32(body) != 0 {
				return errors.New("postgres: authentication other than trust requested")
			}
		case 'E':
			return parsePgError(body)
		case 'Z':
			return nil
		}
	}
}

// pgQuery runs sql with the simple query protocol and returns the first
// column of the first row ("" when there is none).
func pgQuery(w io.Writer, r *bufio.Reader, sql string) (string, error) {
	msg := make([]byte, 5, 6+len(sql))
	msg[0] = 'Q'
	binary.BigEndian.PutUint32(msg[1:], uint32(4+len(sql)+1))
	msg = append(append(msg, sql...), 0)
	if _, err := w.Write(msg); err != nil {
		return "", err
	}
	var first string
	var seen bool
	var qerr error
	for {
		typ, body, err := pgRead(r)
		if err != nil {
			return "", err
		}
		switch typ {
		case 'D':
			if !seen && len(body) >= 6 {
				seen = true
				if n := int32(binary.BigEndian.Uint32(body[2:])); n >= 0 && int(n) <= len(body)-6 {
					first = string(body[6 : 6+n])
				}
			}
		case 'E':
			qerr = parsePgError(body)
		case 'Z':
			return first, qerr
		}
	}
}

// pgRead reads one backend message: its type and body.
func pgRead(r *bufio.Reader) (byte, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n < 4 || n > 1<<20 {
		return 0, nil, fmt.Errorf("postgres: bad message length %d", n)
	}
	body := make([]byte, n-4)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, nil, err
	}
	return hdr[0], body, nil
}

func parsePgError(body []byte) error {
	e := &pgError{}
	for _, f := range strings.Split(string(body), "\x00") {
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case 'C':
			e.Code = f[1:]
		case 'M':
			e.Message = f[1:]
		}
	}
	return e
}
