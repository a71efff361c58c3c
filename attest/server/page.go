package server

import (
	"html/template"
	"net/http"
	"time"

	"github.com/osguard/osguard/attest/api"
)

// cookieName carries the admin token for the fleet page, set by POST /login.
const cookieName = "osguard_verifier"

// The page reloads itself every few seconds, so a new attestation shows
// without a click; untrusted nodes come first, in red, with their reason.
var pageTmpl = template.Must(template.New("page").Funcs(template.FuncMap{
	"ago": func(t time.Time) string {
		if t.Unix() <= 0 {
			return "never"
		}
		return t.Format(time.RFC3339)
	},
}).Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="3">
<title>osguard fleet</title>
<style>
body{font-family:sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:.4em .8em;border-bottom:1px solid #ddd}
tr.untrusted{background:#fde2e1}
tr.untrusted td.state{color:#b00020;font-weight:bold}
tr.trusted td.state{color:#1b5e20;font-weight:bold}
.summary{margin:1em 0}
.bad{color:#b00020;font-weight:bold}
</style></head><body>
<h1>osguard fleet</h1>
<p class="summary" id="summary">{{len .Nodes}} nodes, <span class="{{if .Untrusted}}bad{{end}}" id="untrusted-count">{{.Untrusted}} untrusted</span>; {{len .Policies}} registered image versions{{range .Policies}} · {{.Image}} {{.Version}}{{end}}</p>
<table id="nodes"><thead><tr><th>node</th><th>image</th><th>version</th><th>state</th><th>reason</th><th>last seen</th></tr></thead><tbody>
{{range .Nodes}}<tr class="{{.State}}" data-node="{{.Node}}"><td>{{.Node}}</td><td>{{.Image}}</td><td>{{.Version}}</td><td class="state">{{.State}}</td><td class="reason">{{.Reason}}</td><td>{{ago .LastSeen}}</td></tr>
{{end}}</tbody></table>
</body></html>
`))

var loginTmpl = template.Must(template.New("login").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>osguard verifier</title></head><body>
<h1>osguard verifier</h1>{{if .}}<p style="color:#b00020">{{.}}</p>{{end}}
<form method="post" action="/login"><label>Admin token <input type="password" name="token" autocomplete="off"></label>
<button type="submit">Show the fleet</button></form></body></html>
`))

func (s *Server) page(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
	if !s.authorized(r) {
		w.WriteHeader(http.StatusUnauthorized)
		loginTmpl.Execute(w, "")
		return
	}
	nodes, err := s.Store.Nodes(r.Context())
	if err != nil {
		s.internal(w, err)
		return
	}
	ps, err := s.currentPolicies(r.Context())
	if err != nil {
		s.internal(w, err)
		return
	}
	data := struct {
		Nodes     []api.Node
		Untrusted int
		Policies  []api.PolicyID
	}{Nodes: nodes}
	for _, n := range nodes {
		if n.State != api.Trusted {
			data.Untrusted++
		}
	}
	for _, p := range ps {
		data.Policies = append(data.Policies, api.PolicyID{Image: p.Image, Version: p.Version})
	}
	pageTmpl.Execute(w, data)
}

// login sets the page's cookie from a form with the admin token.
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		loginTmpl.Execute(w, "bad form")
		return
	}
	r.Header.Set("Authorization", "Bearer "+r.PostForm.Get("token"))
	if !s.authorized(r) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(http.StatusUnauthorized)
		loginTmpl.Execute(w, "wrong token")
		return
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: s.Token, Path: "/", HttpOnly: true,
		Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}
