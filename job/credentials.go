package job

import (
	"net/url"
	"strings"
)

// urlCredentials are the user and password of a job URL's userinfo
// (https://user:password@host/…, or a token as the user): a secret of the
// server's user. Every host user can read every process's command line in
// /proc, so they never reach one: the agent removes them from the URL the
// build fetches and hands them to the build's root in a file of the control
// directory only it can read (credentialsFile); build.sh passes them on to
// git (through a credential helper) and curl (through a configuration on
// standard input) in the environment of the builder user only.
type urlCredentials struct {
	user, password string
}

// credentialsFile is the name of the credentials in the control directory:
// "USER\nPASSWORD\n", mode 0400, owned by the mapped root.
const credentialsFile = "credentials"

// splitCredentials returns the URL a build fetches and the credentials of
// its userinfo, for a validated job URL. Only http and https URLs carry
// credentials (ValidateJob refuses a password elsewhere); the user of an
// ssh URL is not a secret and stays.
func splitCredentials(raw string) (string, *urlCredentials) {
	if !strings.Contains(raw, "@") {
		return raw, nil
	}
	u, err := url.Parse(raw)
	if err != nil || u.User == nil || (u.Scheme != "http" && u.Scheme != "https") {
		return raw, nil
	}
	password, _ := u.User.Password()
	c := &urlCredentials{user: u.User.Username(), password: password}
	u.User = nil
	return u.String(), c
}

func (c *urlCredentials) file() []byte {
	return []byte(c.user + "\n" + c.password + "\n")
}
