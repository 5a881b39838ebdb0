// Command sdk-check points Ping Identity's own Go SDK (github.com/patrickcping/pingone-go-sdk-v2)
// at a running pingone-sim, overriding only its auth and API host names, and checks that the
// SDK authenticates and reads users, groups, memberships, applications and activities exactly
// as the simulator's truth dump says.
//
// The SDK accepts host names only (no port, always https), so this program maps the two host
// names to the simulator's address in its own dialer and trusts the simulator's certificate:
// the SDK code itself is used unchanged.
//
// Usage: sdk-check -addr 127.0.0.1:PORT -ca cert.pem -tenant '<stdout JSON line of pingone-sim>'
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/patrickcping/pingone-go-sdk-v2/management"
	"github.com/patrickcping/pingone-go-sdk-v2/pingone"
)

const (
	authHost = "auth.pingone.test"
	apiHost  = "api.pingone.test"
)

type tenant struct {
	EnvironmentID string `json:"environment_id"`
	ClientID      string `json:"client_id"`
	ClientSecret  string `json:"client_secret"`
	Users         int    `json:"users"`
}

var failures int

func check(ok bool, format string, args ...any) bool {
	if ok {
		fmt.Printf("ok   "+format+"\n", args...)
		return true
	}
	failures++
	fmt.Printf("FAIL "+format+"\n", args...)
	return false
}

func must(err error, what string) {
	if err != nil {
		fmt.Printf("FAIL %s: %v\n", what, err)
		os.Exit(1)
	}
}

// truth reads an NDJSON truth dump of the simulator's admin API.
func truth(client *http.Client, addr, env, what string) []map[string]any {
	resp, err := client.Get(fmt.Sprintf("https://%s/__admin/%s/truth/%s", apiHost, env, what))
	must(err, "truth "+what)
	defer resp.Body.Close()
	var out []map[string]any
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var v map[string]any
		must(json.Unmarshal(sc.Bytes(), &v), "truth line")
		out = append(out, v)
	}
	must(sc.Err(), "truth read")
	return out
}

func ids(items []map[string]any) []string {
	out := make([]string, 0, len(items))
	for _, i := range items {
		out = append(out, fmt.Sprint(i["id"]))
	}
	return out
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func main() {
	addr := flag.String("addr", "", "the simulator's real address, host:port")
	ca := flag.String("ca", "", "PEM certificate the simulator serves")
	tenantJSON := flag.String("tenant", "", "one stdout JSON line of pingone-sim")
	flag.Parse()
	var t tenant
	must(json.Unmarshal([]byte(*tenantJSON), &t), "parse -tenant")
	pem, err := os.ReadFile(*ca)
	must(err, "read -ca")
	roots := x509.NewCertPool()
	check(roots.AppendCertsFromPEM(pem), "simulator certificate loaded")

	// Name resolution for the two overridden host names: both go to the simulator.
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	transport := http.DefaultTransport.(*http.Transport)
	transport.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	transport.DialContext = func(ctx context.Context, network, hostport string) (net.Conn, error) {
		host, _, _ := net.SplitHostPort(hostport)
		if host == authHost || host == apiHost {
			return dialer.DialContext(ctx, network, *addr)
		}
		return nil, fmt.Errorf("sdk-check: refusing to dial %s", hostport)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	region := management.ENUMREGIONCODE_NA
	auth, api := authHost, apiHost
	cfg := &pingone.Config{
		ClientID:             &t.ClientID,
		ClientSecret:         &t.ClientSecret,
		EnvironmentID:        &t.EnvironmentID,
		RegionCode:           &region,
		AuthHostnameOverride: &auth,
		APIHostnameOverride:  &api,
	}
	clients, err := cfg.APIClient(ctx)
	must(err, "SDK authentication (client credentials) against the simulator")
	check(true, "SDK obtained a token from https://%s/%s/as/token", authHost, t.EnvironmentID)
	m := clients.ManagementAPIClient

	// Users: a full paged scan through the SDK's iterator (follows next verbatim).
	var sdkUsers []string
	pages := 0
	for cursor, err := range m.UsersApi.ReadAllUsers(ctx, t.EnvironmentID).Limit(200).Execute() {
		must(err, "SDK ReadAllUsers page")
		pages++
		for _, u := range cursor.EntityArray.Embedded.GetUsers() {
			sdkUsers = append(sdkUsers, u.GetId())
			if u.GetUsername() == "" {
				check(false, "user %s has a username", u.GetId())
			}
		}
	}
	truthUsers := truth(http.DefaultClient, *addr, t.EnvironmentID, "users")
	check(len(sdkUsers) == t.Users, "SDK read %d users in %d pages (tenant has %d)", len(sdkUsers), pages, t.Users)
	check(equal(sdkUsers, ids(truthUsers)), "SDK users equal the truth dump, in order")

	// Groups.
	var sdkGroups []string
	for cursor, err := range m.GroupsApi.ReadAllGroups(ctx, t.EnvironmentID).Limit(5).Execute() {
		must(err, "SDK ReadAllGroups page")
		for _, g := range cursor.EntityArray.Embedded.GetGroups() {
			sdkGroups = append(sdkGroups, g.GetId())
		}
	}
	truthGroups := truth(http.DefaultClient, *addr, t.EnvironmentID, "groups")
	check(equal(sdkGroups, ids(truthGroups)), "SDK groups (%d, pages of 5) equal the truth dump", len(sdkGroups))

	// Applications: polymorphic by protocol and type; every one must decode.
	var sdkApps []string
	for cursor, err := range m.ApplicationsApi.ReadAllApplications(ctx, t.EnvironmentID).Execute() {
		must(err, "SDK ReadAllApplications page")
		for _, a := range cursor.EntityArray.Embedded.GetApplications() {
			inst := a.GetActualInstance()
			if inst == nil {
				check(false, "an application decodes into one of the SDK's application models")
				continue
			}
			raw, _ := json.Marshal(inst)
			var v map[string]any
			_ = json.Unmarshal(raw, &v)
			if a.ApplicationPingOneAdminConsole != nil {
				// The SDK's admin console model carries no id: compare by type.
				sdkApps = append(sdkApps, "PING_ONE_ADMIN_CONSOLE")
				continue
			}
			sdkApps = append(sdkApps, fmt.Sprint(v["id"]))
		}
	}
	truthApps := truth(http.DefaultClient, *addr, t.EnvironmentID, "applications")
	var truthAppIDs []string
	for _, a := range truthApps {
		if a["type"] == "PING_ONE_ADMIN_CONSOLE" {
			truthAppIDs = append(truthAppIDs, "PING_ONE_ADMIN_CONSOLE")
		} else {
			truthAppIDs = append(truthAppIDs, fmt.Sprint(a["id"]))
		}
	}
	if !check(equal(sdkApps, truthAppIDs), "SDK applications (%d, every type and protocol) equal the truth dump", len(sdkApps)) {
		fmt.Printf("     sdk:   %v\n     truth: %v\n", sdkApps, truthAppIDs)
	}

	// Memberships: per group with the memberOfGroups filter, and per user.
	memberships := truth(http.DefaultClient, *addr, t.EnvironmentID, "memberships")
	want := map[string][]string{}
	for _, mship := range memberships {
		g := fmt.Sprint(mship["groupId"])
		want[g] = append(want[g], fmt.Sprint(mship["userId"]))
	}
	groupID := sdkGroups[1]
	var members []string
	filter := fmt.Sprintf(`memberOfGroups[id eq "%s"]`, groupID)
	for cursor, err := range m.UsersApi.ReadAllUsers(ctx, t.EnvironmentID).Filter(filter).Limit(50).Execute() {
		must(err, "SDK ReadAllUsers with memberOfGroups filter")
		for _, u := range cursor.EntityArray.Embedded.GetUsers() {
			members = append(members, u.GetId())
		}
	}
	sort.Strings(members)
	expected := append([]string(nil), want[groupID]...)
	sort.Strings(expected)
	check(len(members) > 0 && equal(members, expected), "SDK memberOfGroups filter returns the %d members of a group", len(members))
	var userGroups []string
	for cursor, err := range m.GroupMembershipApi.ReadAllGroupMembershipsForUser(ctx, t.EnvironmentID, expected[0]).Execute() {
		must(err, "SDK ReadAllGroupMembershipsForUser")
		for _, gm := range cursor.EntityArray.Embedded.GetGroupMemberships() {
			userGroups = append(userGroups, gm.GetId())
		}
	}
	found := false
	for _, g := range userGroups {
		found = found || g == groupID
	}
	check(found, "SDK memberOfGroups of a member lists the group (%d groups)", len(userGroups))

	// Audit activities: the SDK builds the request; the body is read as JSON.
	now := time.Now().UTC()
	actFilter := fmt.Sprintf(`recordedat gt "%s" and recordedat lt "%s"`,
		now.Add(-24*time.Hour).Format("2006-01-02T15:04:05.000Z"), now.Format("2006-01-02T15:04:05.000Z"))
	resp, err := m.AuditActivitiesApi.EnvironmentsEnvironmentIDActivitiesGet(ctx, t.EnvironmentID).Filter(actFilter).Limit(100).Execute()
	must(err, "SDK activities request")
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var acts struct {
		Embedded struct {
			Activities []map[string]any `json:"activities"`
		} `json:"_embedded"`
	}
	must(json.Unmarshal(body, &acts), "activities JSON")
	okActs := len(acts.Embedded.Activities) > 0
	for _, a := range acts.Embedded.Activities {
		action, _ := a["action"].(map[string]any)
		okActs = okActs && action["type"] == "USER.ACCESS_ALLOWED"
	}
	check(resp.StatusCode == 200 && okActs, "SDK activities request returns %d USER.ACCESS_ALLOWED events of the last day", len(acts.Embedded.Activities))

	// An error answer in PingOne's shape surfaces as the SDK's typed error.
	_, httpResp, err := m.UsersApi.ReadUser(ctx, t.EnvironmentID, "00000000-0000-4000-8000-000000000000").Execute()
	check(err != nil && httpResp != nil && httpResp.StatusCode == 404 && strings.Contains(err.Error(), "404"), "SDK ReadUser of an unknown id gets 404 NOT_FOUND")

	if failures > 0 {
		fmt.Printf("%d check(s) failed\n", failures)
		os.Exit(1)
	}
	fmt.Println("all SDK checks passed")
}
