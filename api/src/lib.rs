//! The operator-facing HTTP API: poem-openapi operations under `/api`, the spec at
//! `/api/openapi.json`, Swagger UI at `/docs`, Prometheus metrics at `/metrics`, and the event
//! WebSocket. Authentication and the route table's permissions are enforced by [`guard`] before
//! any handler runs; handlers scope every query to the caller's organisation.
//!
//! What it must not do: talk to agents (it asks the node through [`NodeHooks`]), read the clock
//! directly (time comes from the context's clock), or answer a 5xx for bad input.

pub mod auth;
pub mod context;
pub mod error;
pub mod guard;
pub mod handlers;
pub mod metrics;
pub mod rate_limit;
pub mod rbac;
pub mod routes;

use poem::endpoint::make_sync;
use poem::web::Data;
use poem::{Endpoint, EndpointExt, Route, get, handler};
use poem_openapi::OpenApiService;

pub use context::{ApiContext, ApiSettings, EnrolmentInfo, NoNode, NodeHooks};
pub use error::{ApiError, ErrorBody};

use handlers::agents::AgentsApi;
use handlers::alerting_events::AlertEventsApi;
use handlers::alerting_integrations::AlertingIntegrationsApi;
use handlers::alerting_maintenance::AlertingMaintenanceApi;
use handlers::alerting_policies::AlertingPoliciesApi;
use handlers::alerting_rules::AlertRulesApi;
use handlers::alerting_silences::AlertingSilencesApi;
use handlers::api_keys::ApiKeysApi;
use handlers::audit::AuditApi;
use handlers::auth::AuthApi;
use handlers::files::FilesApi;
use handlers::groups::{CompaniesApi, FoldersApi, SitesApi, TagsApi};
use handlers::health::HealthApi;
use handlers::jobs::JobsApi;
use handlers::metrics::MetricsApi;
use handlers::orgs::OrgsApi;
use handlers::shell::ShellApi;
use handlers::tokens::TokensApi;
use handlers::users::UsersApi;
use handlers::vault::VaultApi;
use handlers::wake::WakeApi;
use handlers::ws::EventsApi;

const DESCRIPTION: &str = "\
The Reap3r control plane API.\n\n\
Authenticate with `POST /api/auth/login` and send the access token as `Authorization: Bearer`, \
or use an API key (`X-API-Key` or bearer). Every request acts in one organisation: the caller's \
own, or the one named by the `X-Reap3r-Org` header (super admins: any; MSSP technicians: \
customer organisations they are assigned to). Errors always have the body \
`{code, message, details?}`.";

type Apis = (
    (HealthApi, AuthApi, UsersApi, OrgsApi, EventsApi),
    (SitesApi, CompaniesApi, FoldersApi, TagsApi),
    (AgentsApi, TokensApi, ApiKeysApi, AuditApi, JobsApi),
    (
        AlertingPoliciesApi,
        AlertingSilencesApi,
        AlertingMaintenanceApi,
        AlertingIntegrationsApi,
    ),
    (MetricsApi, VaultApi, WakeApi, ShellApi),
    (AlertRulesApi, AlertEventsApi, FilesApi),
);

fn service() -> OpenApiService<Apis, ()> {
    OpenApiService::new(
        (
            (HealthApi, AuthApi, UsersApi, OrgsApi, EventsApi),
            (SitesApi, CompaniesApi, FoldersApi, TagsApi),
            (AgentsApi, TokensApi, ApiKeysApi, AuditApi, JobsApi),
            (
                AlertingPoliciesApi,
                AlertingSilencesApi,
                AlertingMaintenanceApi,
                AlertingIntegrationsApi,
            ),
            (MetricsApi, VaultApi, WakeApi, ShellApi),
            (AlertRulesApi, AlertEventsApi, FilesApi),
        ),
        "Reap3r API",
        env!("CARGO_PKG_VERSION"),
    )
    .description(DESCRIPTION)
}

/// The OpenAPI document, pretty-printed, exactly as served at `/api/openapi.json`.
pub fn openapi_json() -> String {
    service().spec()
}

#[handler]
fn prometheus(ctx: Data<&ApiContext>) -> poem::Response {
    poem::Response::builder()
        .content_type("text/plain; version=0.0.4")
        .body(ctx.metrics.render(&ctx.fleet_stats))
}

/// The whole HTTP application.
pub fn app(ctx: ApiContext) -> impl Endpoint {
    let service = service();
    let spec = service.spec();
    let docs = service.swagger_ui();
    let routes = Route::new()
        .at(
            "/api/openapi.json",
            get(make_sync(move |_| {
                poem::Response::builder()
                    .content_type("application/json")
                    .body(spec.clone())
            })),
        )
        .nest("/docs", docs)
        .at("/metrics", get(prometheus))
        .nest("/", service);
    guard::Guard::new(routes.data(ctx.clone()), ctx)
}

#[cfg(test)]
mod spec_tests {
    use std::collections::BTreeSet;

    use super::*;

    fn spec() -> serde_json::Value {
        serde_json::from_str(&openapi_json()).unwrap()
    }

    /// (METHOD, path) of every operation in the spec.
    fn operations(spec: &serde_json::Value) -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        for (path, item) in spec["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
        out
    }

    #[test]
    fn route_table_lists_exactly_the_operations_in_the_spec() {
        let in_spec = operations(&spec());
        let in_table: BTreeSet<(String, String)> = routes::ROUTES
            .iter()
            .map(|r| (r.method.to_owned(), r.path.to_owned()))
            .collect();
        let missing: Vec<_> = in_spec.difference(&in_table).collect();
        let extra: Vec<_> = in_table.difference(&in_spec).collect();
        assert!(
            missing.is_empty(),
            "operations without a route-table entry: {missing:?}"
        );
        assert!(
            extra.is_empty(),
            "route-table entries without an operation: {extra:?}"
        );
    }

    #[test]
    fn every_operation_is_documented_for_client_generators() {
        let spec = spec();
        let mut ids = BTreeSet::new();
        for (path, item) in spec["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let id = op["operationId"].as_str().unwrap_or_default();
                assert!(!id.is_empty(), "{method} {path} has no operationId");
                assert!(ids.insert(id.to_owned()), "duplicate operationId {id}");
                assert!(
                    op["summary"].as_str().is_some_and(|s| !s.is_empty()),
                    "{method} {path} has no summary"
                );
                let route = routes::lookup(method, path).unwrap();
                if route.access != routes::Access::Public {
                    let responses = op["responses"].as_object().unwrap();
                    for code in ["400", "401", "403", "404"] {
                        assert!(responses.contains_key(code), "{method} {path} lacks {code}");
                    }
                    assert!(
                        op["security"].is_array(),
                        "{method} {path} declares no security"
                    );
                }
            }
        }
    }

    /// The guard can refuse any operation with 429 (a credential's or an address's rate limit),
    /// so every operation documents it, with its `Retry-After` header.
    #[test]
    fn every_operation_documents_the_rate_limit() {
        let spec = spec();
        for (path, item) in spec["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let limited = &op["responses"]["429"];
                assert!(limited.is_object(), "{method} {path} lacks 429");
                let headers = limited["headers"].as_object();
                assert!(
                    headers
                        .is_some_and(|h| h.keys().any(|k| k.eq_ignore_ascii_case("retry-after"))),
                    "{method} {path}: 429 without Retry-After"
                );
                let schema = &limited["content"]["application/json; charset=utf-8"]["schema"];
                assert_eq!(
                    schema["$ref"], "#/components/schemas/ErrorBody",
                    "{method} {path}: 429 body"
                );
            }
        }
    }

    /// `docs/openapi.json` is what `reap3r openapi --out docs/openapi.json` writes; regenerate it
    /// with that command when this fails.
    #[test]
    fn checked_in_spec_matches_the_served_one() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            checked_in.trim_end() == openapi_json().trim_end(),
            "docs/openapi.json is stale: run `cargo run --bin reap3r -- openapi --out docs/openapi.json`"
        );
    }
}
