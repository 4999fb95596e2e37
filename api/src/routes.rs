//! The route table: every API operation and what a caller needs to reach it. The guard
//! middleware enforces it before any handler runs, and tests derive the role matrix from it and
//! check that it lists exactly the operations in the OpenAPI spec.

use crate::rbac::Permission::{self, *};

/// What a caller needs to reach a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, no credentials.
    Public,
    /// Any valid credential; the handler may check more (e.g. own session only).
    Authenticated,
    /// A credential whose role (and, for API keys, scopes) holds the permission.
    Perm(Permission),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub method: &'static str,
    /// As written in the OpenAPI spec: `{name}` is one path segment.
    pub path: &'static str,
    pub access: Access,
}

const fn r(method: &'static str, path: &'static str, access: Access) -> Route {
    Route {
        method,
        path,
        access,
    }
}

const fn p(permission: Permission) -> Access {
    Access::Perm(permission)
}

use Access::{Authenticated, Public};

pub const ROUTES: &[Route] = &[
    r("GET", "/api/health", Public),
    r("GET", "/api/ready", Public),
    // Auth
    r("POST", "/api/auth/login", Public),
    r("POST", "/api/auth/login/mfa", Public),
    // The refresh token in the body is the credential; the access token may have expired.
    r("POST", "/api/auth/refresh", Public),
    r("POST", "/api/auth/logout", Authenticated),
    r("GET", "/api/auth/me", Authenticated),
    r("POST", "/api/auth/mfa/setup", Authenticated),
    r("POST", "/api/auth/mfa/enable", Authenticated),
    r("POST", "/api/auth/mfa/disable", Authenticated),
    r("POST", "/api/auth/step-up", Authenticated),
    r("GET", "/api/ws", Authenticated),
    // Remote shells (attaching checks that the session is the caller's own)
    r("POST", "/api/agents/{id}/shell", p(ShellOpen)),
    r("GET", "/api/shell/{id}/ws", p(ShellOpen)),
    r("GET", "/api/shell/sessions", p(ShellView)),
    r("GET", "/api/shell/sessions/{id}", p(ShellView)),
    r("GET", "/api/shell/sessions/{id}/recording", p(ShellView)),
    // Files: uploads, downloads, pushes to and pulls from agents
    r("POST", "/api/files", p(FilePush)),
    r("GET", "/api/files", p(FileView)),
    r("GET", "/api/files/{blake3}", p(FilePull)),
    r("POST", "/api/agents/{id}/files/push", p(FilePush)),
    r("POST", "/api/agents/{id}/files/pull", p(FilePull)),
    r("GET", "/api/transfers", p(FileView)),
    r("GET", "/api/transfers/{id}", p(FileView)),
    // Users
    r("GET", "/api/users", p(UserList)),
    r("POST", "/api/users", p(UserCreate)),
    r("GET", "/api/users/{id}", p(UserView)),
    r("PATCH", "/api/users/{id}", p(UserUpdate)),
    r("PATCH", "/api/admin/users/{id}/suspend", p(UserSuspend)),
    r("POST", "/api/admin/users/{id}/role", p(RoleUpdate)),
    r("GET", "/api/admin/users/{id}/sessions", p(UserView)),
    r("DELETE", "/api/admin/sessions/{id}", p(UserUpdate)),
    r("POST", "/api/admin/users/{id}/revoke-all", p(UserUpdate)),
    r("POST", "/api/admin/users/{id}/mfa/disable", p(UserResetMfa)),
    r("GET", "/api/admin/login-events", p(AuditView)),
    r("GET", "/api/admin/roles", p(RoleList)),
    // Organisations and MSSP assignments
    r("GET", "/api/orgs", p(OrgList)),
    r("POST", "/api/orgs", p(OrgCreate)),
    r("GET", "/api/orgs/{id}", p(OrgList)),
    r("GET", "/api/orgs/{id}/assignments", p(OrgAssign)),
    r("POST", "/api/orgs/{id}/assignments", p(OrgAssign)),
    r(
        "DELETE",
        "/api/orgs/{id}/assignments/{user_id}",
        p(OrgAssign),
    ),
    // Groupings
    r("GET", "/api/sites", p(SiteList)),
    r("POST", "/api/sites", p(SiteCreate)),
    r("GET", "/api/sites/{id}", p(SiteList)),
    r("PATCH", "/api/sites/{id}", p(SiteUpdate)),
    r("DELETE", "/api/sites/{id}", p(SiteDelete)),
    r("GET", "/api/companies", p(CompanyList)),
    r("POST", "/api/companies", p(CompanyCreate)),
    r("GET", "/api/companies/{id}", p(CompanyView)),
    r("PATCH", "/api/companies/{id}", p(CompanyUpdate)),
    r("DELETE", "/api/companies/{id}", p(CompanyDelete)),
    r("GET", "/api/folders", p(FolderList)),
    r("POST", "/api/folders", p(FolderCreate)),
    r("GET", "/api/folders/{id}", p(FolderView)),
    r("PATCH", "/api/folders/{id}", p(FolderUpdate)),
    r("DELETE", "/api/folders/{id}", p(FolderDelete)),
    r("GET", "/api/tags", p(TagList)),
    r("POST", "/api/tags", p(TagCreate)),
    r("GET", "/api/tags/{id}", p(TagList)),
    r("PATCH", "/api/tags/{id}", p(TagUpdate)),
    r("DELETE", "/api/tags/{id}", p(TagDelete)),
    // Agents
    r("GET", "/api/agents", p(AgentList)),
    r("GET", "/api/agents/stats", p(DashboardView)),
    r("GET", "/api/agents/{id}", p(AgentView)),
    r("DELETE", "/api/agents/{id}", p(AgentDelete)),
    r("POST", "/api/agents/{id}/move", p(AgentMove)),
    r("POST", "/api/agents/{id}/approve", p(AgentApprove)),
    r("POST", "/api/agents/{id}/reject", p(AgentApprove)),
    r("POST", "/api/agents/{id}/revoke", p(AgentRevoke)),
    r("POST", "/api/agents/{id}/tags", p(AgentTag)),
    // A wake_on_lan job for the relay: job:wake_on_lan checked by the job operation.
    r("POST", "/api/agents/{id}/wake", p(JobCreate)),
    r("DELETE", "/api/agents/{id}/tags/{tag_id}", p(AgentTag)),
    // Metrics
    r("GET", "/api/agents/{id}/metrics", p(MetricsView)),
    r("GET", "/api/agents/{id}/metrics/export", p(MetricsView)),
    r("GET", "/api/metrics/fleet", p(MetricsView)),
    // Enrolment tokens
    // Jobs (the job type's own permission is checked by the handler as well)
    r("GET", "/api/jobs", p(JobList)),
    r("POST", "/api/jobs", p(JobCreate)),
    r("GET", "/api/jobs/stats", p(DashboardView)),
    r("GET", "/api/jobs/{id}", p(JobView)),
    r("GET", "/api/jobs/{id}/results", p(JobView)),
    r("GET", "/api/jobs/{id}/results/{agent_id}", p(JobView)),
    r("POST", "/api/jobs/{id}/cancel", p(JobCancel)),
    // Alert routing: policies, silences, maintenance windows (one permission each, read and write)
    r("GET", "/api/alerting/policies", p(AlertPolicyManage)),
    r("POST", "/api/alerting/policies", p(AlertPolicyManage)),
    r("GET", "/api/alerting/policies/{id}", p(AlertPolicyManage)),
    r("PUT", "/api/alerting/policies/{id}", p(AlertPolicyManage)),
    r(
        "DELETE",
        "/api/alerting/policies/{id}",
        p(AlertPolicyManage),
    ),
    r("GET", "/api/alerting/silences", p(AlertSilenceManage)),
    r("POST", "/api/alerting/silences", p(AlertSilenceManage)),
    r("GET", "/api/alerting/silences/{id}", p(AlertSilenceManage)),
    r("PUT", "/api/alerting/silences/{id}", p(AlertSilenceManage)),
    r(
        "DELETE",
        "/api/alerting/silences/{id}",
        p(AlertSilenceManage),
    ),
    r(
        "GET",
        "/api/alerting/maintenance",
        p(AlertMaintenanceManage),
    ),
    r(
        "POST",
        "/api/alerting/maintenance",
        p(AlertMaintenanceManage),
    ),
    r(
        "GET",
        "/api/alerting/maintenance/{id}",
        p(AlertMaintenanceManage),
    ),
    r(
        "PUT",
        "/api/alerting/maintenance/{id}",
        p(AlertMaintenanceManage),
    ),
    r(
        "DELETE",
        "/api/alerting/maintenance/{id}",
        p(AlertMaintenanceManage),
    ),
    r("GET", "/api/enrollment/tokens", p(TokenList)),
    r("POST", "/api/enrollment/tokens", p(TokenCreate)),
    r("POST", "/api/enrollment/tokens/{id}/revoke", p(TokenRevoke)),
    r("DELETE", "/api/enrollment/tokens/{id}", p(TokenRevoke)),
    r("GET", "/api/enrollment/tokens/{id}/commands", p(TokenList)),
    // API keys
    r("GET", "/api/api-keys", p(SettingsView)),
    r("POST", "/api/api-keys", p(SettingsUpdate)),
    r("DELETE", "/api/api-keys/{id}", p(SettingsUpdate)),
    // Alerting: integrations and the notifier's delivery log
    r(
        "GET",
        "/api/alerting/integrations",
        p(AlertIntegrationManage),
    ),
    r(
        "POST",
        "/api/alerting/integrations",
        p(AlertIntegrationManage),
    ),
    r(
        "PATCH",
        "/api/alerting/integrations/{id}",
        p(AlertIntegrationManage),
    ),
    r(
        "DELETE",
        "/api/alerting/integrations/{id}",
        p(AlertIntegrationManage),
    ),
    r("POST", "/api/alerting/integrations/{id}/test", p(AlertTest)),
    r(
        "GET",
        "/api/alerting/notifications",
        p(AlertIntegrationManage),
    ),
    r(
        "POST",
        "/api/alerting/notifications/{id}/retry",
        p(AlertIntegrationManage),
    ),
    // Audit
    r("GET", "/api/audit-logs", p(AuditView)),
    r("GET", "/api/audit-logs/verify", p(AuditVerify)),
    // Alerting: rules and events
    r("GET", "/api/alerting/rules", p(AlertRuleList)),
    r("POST", "/api/alerting/rules", p(AlertRuleCreate)),
    r("GET", "/api/alerting/rules/{id}", p(AlertRuleList)),
    r("PATCH", "/api/alerting/rules/{id}", p(AlertRuleUpdate)),
    r("DELETE", "/api/alerting/rules/{id}", p(AlertRuleDelete)),
    r("GET", "/api/alerting/events", p(AlertEventList)),
    r("GET", "/api/alerting/events/{id}", p(AlertEventList)),
    r("POST", "/api/alerting/events/{id}/ack", p(AlertEventAck)),
    r(
        "POST",
        "/api/alerting/events/{id}/resolve",
        p(AlertEventResolve),
    ),
    r(
        "POST",
        "/api/alerting/events/{id}/snooze",
        p(AlertEventSnooze),
    ),
    // A note is an operator's action on the event, like an ack.
    r("POST", "/api/alerting/events/{id}/notes", p(AlertEventAck)),
    r("GET", "/api/alerting/stats", p(AlertEventList)),
    // Vault: each secret also needs its owner's grant (checked by the operation).
    r("GET", "/api/vault", p(SecretList)),
    r("POST", "/api/vault", p(SecretWrite)),
    r("GET", "/api/vault/stats", p(SecretList)),
    r("GET", "/api/vault/expiring", p(SecretList)),
    r("GET", "/api/vault/{id}", p(SecretRead)),
    r("PATCH", "/api/vault/{id}", p(SecretWrite)),
    r("DELETE", "/api/vault/{id}", p(SecretDelete)),
    r("POST", "/api/vault/{id}/reveal", p(SecretReveal)),
    r("POST", "/api/vault/{id}/rotate", p(SecretWrite)),
    // Also job:create and job:run_script, checked by the job operation.
    r("POST", "/api/vault/{id}/use", p(SecretUse)),
    r("GET", "/api/vault/{id}/versions", p(SecretRead)),
    r(
        "POST",
        "/api/vault/{id}/versions/{version}/reveal",
        p(SecretReveal),
    ),
    r("GET", "/api/vault/{id}/access-logs", p(SecretRead)),
    r("GET", "/api/vault/{id}/permissions", p(SecretRead)),
    r("POST", "/api/vault/{id}/share", p(SecretWrite)),
    r("DELETE", "/api/vault/permissions/{id}", p(SecretWrite)),
];

/// The route a request path and method belong to. Literal segments beat `{param}` segments, so
/// `/api/agents/stats` is not taken for `/api/agents/{id}`.
pub fn lookup(method: &str, path: &str) -> Option<&'static Route> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    ROUTES
        .iter()
        .filter(|r| r.method.eq_ignore_ascii_case(method))
        .filter_map(|r| literal_matches(r.path, &segments).map(|score| (score, r)))
        .max_by_key(|(score, _)| *score)
        .map(|(_, r)| r)
}

/// Number of literal segments matched, or `None` if the pattern does not fit.
fn literal_matches(pattern: &str, segments: &[&str]) -> Option<usize> {
    let parts: Vec<&str> = pattern.split('/').collect();
    if parts.len() != segments.len() {
        return None;
    }
    let mut literals = 0;
    for (part, seg) in parts.iter().zip(segments) {
        if part.starts_with('{') {
            if seg.is_empty() {
                return None;
            }
        } else if part == seg {
            literals += 1;
        } else {
            return None;
        }
    }
    Some(literals)
}

/// The methods a path answers to, for the `Allow` header of a 405.
pub fn methods_for(path: &str) -> Vec<&'static str> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    let scored: Vec<(usize, &Route)> = ROUTES
        .iter()
        .filter_map(|r| literal_matches(r.path, &segments).map(|score| (score, r)))
        .collect();
    // Only the most specific template answers for the path (`stats`, not `{id}`).
    let best = scored.iter().map(|(score, _)| *score).max().unwrap_or(0);
    let mut methods: Vec<&'static str> = scored
        .iter()
        .filter(|(score, _)| *score == best)
        .map(|(_, r)| r.method)
        .collect();
    methods.sort_unstable();
    methods.dedup();
    methods
}

/// Routes whose body the handler streams (a file upload, capped by its own setting) instead of
/// the guard reading it under the API's body cap.
const STREAMED_BODIES: &[(&str, &str)] = &[("POST", "/api/files")];

pub fn streams_body(route: &Route) -> bool {
    STREAMED_BODIES.contains(&(route.method, route.path))
}

/// The route template for metrics labels: bounded cardinality whatever the ids in paths.
pub fn template(method: &str, path: &str) -> &'static str {
    lookup(method, path).map_or("other", |r| r.path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(method: &str, path: &str, want: Option<&str>) {
        assert_eq!(
            lookup(method, path).map(|r| r.path),
            want,
            "{method} {path}"
        );
    }

    #[test]
    fn lookup_prefers_literals_and_checks_method() {
        check("GET", "/api/agents/stats", Some("/api/agents/stats"));
        check(
            "GET",
            "/api/agents/6f1c8f0e-0000-0000-0000-000000000000",
            Some("/api/agents/{id}"),
        );
        check("GET", "/api/agents/", Some("/api/agents"));
        check("PUT", "/api/agents", None);
        check("GET", "/api/agents/x/y/z", None);
        check(
            "DELETE",
            "/api/agents/a/tags/b",
            Some("/api/agents/{id}/tags/{tag_id}"),
        );
        check(
            "GET",
            "/api/audit-logs/verify",
            Some("/api/audit-logs/verify"),
        );
        check("GET", "/docs", None);
        assert_eq!(methods_for("/api/agents/stats"), vec!["GET"]);
        assert_eq!(methods_for("/api/agents/x"), vec!["DELETE", "GET"]);
    }

    #[test]
    fn every_route_is_listed_once() {
        let mut seen = std::collections::HashSet::new();
        for r in ROUTES {
            assert!(seen.insert((r.method, r.path)), "{} {}", r.method, r.path);
            assert!(r.path.starts_with("/api/"));
        }
    }
}
