//! `/api/alerting/maintenance`: maintenance windows (no notifications and escalation paused
//! inside; what still fires is notified once when one ends), mapped to the routing operations.

use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use reap3r_actors::DomainError;
use reap3r_actors::notify::routing::{
    self as routing, CreateRouting, Day, DeleteRouting, Saved, Schedule, UpdateRouting,
    WindowScope, WindowSpec,
};
use reap3r_store::Uuid;

use super::ApiTags;
use super::auth::{Done, done};
use crate::auth::Auth;
use crate::context::ApiContext;
use crate::error::ApiResult;

/// A window: `once` (starts_at_ms, ends_at_ms) or `weekly` (weekdays, start_time,
/// duration_minutes, time_zone). Scope: folders or tags of the org; both empty: the whole org.
#[derive(Debug, Object)]
pub struct MaintenanceRequest {
    #[oai(validator(max_length = 200, pattern = r"\S"))]
    pub name: String,
    /// Folders it covers.
    #[oai(default, validator(max_items = 32))]
    pub folder_ids: Vec<Uuid>,
    /// Agent tags it covers.
    #[oai(default, validator(max_items = 32, max_length = 200))]
    pub tags: Vec<String>,
    /// once or weekly.
    #[oai(validator(max_length = 16))]
    pub schedule: String,
    /// once: start, in Unix milliseconds.
    pub starts_at_ms: Option<i64>,
    /// once: end, in Unix milliseconds (at most 90 days after the start).
    pub ends_at_ms: Option<i64>,
    /// weekly: mon … sun.
    #[oai(default, validator(max_items = 7, max_length = 3))]
    pub weekdays: Vec<String>,
    /// weekly: local start time, HH:MM.
    #[oai(validator(max_length = 5))]
    pub start_time: Option<String>,
    /// weekly: wall-clock minutes (1 to 10080).
    #[oai(validator(minimum(value = "1"), maximum(value = "10080")))]
    pub duration_minutes: Option<i64>,
    /// weekly: IANA time zone, e.g. Europe/Paris.
    #[oai(validator(max_length = 64))]
    pub time_zone: Option<String>,
}

fn needs<T>(value: Option<T>, field: &str, schedule: &str) -> ApiResult<T> {
    value.ok_or_else(|| DomainError::invalid(format!("a {schedule} window needs {field}")).into())
}

impl MaintenanceRequest {
    fn spec(self) -> ApiResult<WindowSpec> {
        let schedule = match self.schedule.as_str() {
            "once" => Schedule::Once {
                starts_at_ms: needs(self.starts_at_ms, "starts_at_ms", "once")?,
                ends_at_ms: needs(self.ends_at_ms, "ends_at_ms", "once")?,
            },
            "weekly" => Schedule::Weekly {
                weekdays: self
                    .weekdays
                    .iter()
                    .map(|d| Day::parse(d))
                    .collect::<Result<_, _>>()?,
                start_time: needs(self.start_time, "start_time", "weekly")?,
                duration_minutes: needs(self.duration_minutes, "duration_minutes", "weekly")?,
                time_zone: needs(self.time_zone, "time_zone", "weekly")?,
            },
            other => {
                return Err(DomainError::invalid(format!(
                    "unknown schedule {other:?} (once or weekly)"
                ))
                .into());
            }
        };
        Ok(WindowSpec {
            name: self.name,
            scope: WindowScope {
                folder_ids: self.folder_ids,
                tags: self.tags,
            },
            schedule,
        })
    }
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct MaintenanceView {
    pub id: Uuid,
    pub org_id: Uuid,
    pub name: String,
    pub folder_ids: Vec<Uuid>,
    pub tags: Vec<String>,
    /// once or weekly.
    pub schedule: String,
    pub starts_at_ms: Option<i64>,
    pub ends_at_ms: Option<i64>,
    pub weekdays: Vec<String>,
    pub start_time: Option<String>,
    pub duration_minutes: Option<i64>,
    pub time_zone: Option<String>,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<Saved<WindowSpec>> for MaintenanceView {
    fn from(w: Saved<WindowSpec>) -> Self {
        let mut view = Self {
            id: w.id,
            org_id: w.org_id,
            name: w.spec.name,
            folder_ids: w.spec.scope.folder_ids,
            tags: w.spec.scope.tags,
            schedule: String::new(),
            starts_at_ms: None,
            ends_at_ms: None,
            weekdays: Vec::new(),
            start_time: None,
            duration_minutes: None,
            time_zone: None,
            created_by: w.created_by,
            created_at: w.created_at,
            updated_at: w.updated_at,
        };
        match w.spec.schedule {
            Schedule::Once {
                starts_at_ms,
                ends_at_ms,
            } => {
                view.schedule = "once".into();
                view.starts_at_ms = Some(starts_at_ms);
                view.ends_at_ms = Some(ends_at_ms);
            }
            Schedule::Weekly {
                weekdays,
                start_time,
                duration_minutes,
                time_zone,
            } => {
                view.schedule = "weekly".into();
                view.weekdays = weekdays.iter().map(|d| d.as_str().to_owned()).collect();
                view.start_time = Some(start_time);
                view.duration_minutes = Some(duration_minutes);
                view.time_zone = Some(time_zone);
            }
        }
        view
    }
}

pub struct AlertingMaintenanceApi;

#[OpenApi(tag = "ApiTags::Alerting")]
impl AlertingMaintenanceApi {
    /// List the organisation's maintenance windows.
    #[oai(
        path = "/api/alerting/maintenance",
        method = "get",
        operation_id = "listMaintenanceWindows"
    )]
    async fn list(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
    ) -> ApiResult<Json<Vec<MaintenanceView>>> {
        let all = routing::list_routing::<WindowSpec>(&ctx.domain, auth.caller()).await?;
        Ok(Json(all.into_iter().map(MaintenanceView::from).collect()))
    }

    /// Create a maintenance window.
    #[oai(
        path = "/api/alerting/maintenance",
        method = "post",
        operation_id = "createMaintenanceWindow"
    )]
    async fn create(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        body: Json<MaintenanceRequest>,
    ) -> ApiResult<Json<MaintenanceView>> {
        let saved = CreateRouting {
            spec: body.0.spec()?,
        }
        .run(&ctx.domain, auth.caller())
        .await?;
        Ok(Json(saved.into()))
    }

    /// Get a maintenance window.
    #[oai(
        path = "/api/alerting/maintenance/:id",
        method = "get",
        operation_id = "getMaintenanceWindow"
    )]
    async fn get(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        id: Path<Uuid>,
    ) -> ApiResult<Json<MaintenanceView>> {
        let saved = routing::get_routing::<WindowSpec>(&ctx.domain, auth.caller(), id.0).await?;
        Ok(Json(saved.into()))
    }

    /// Replace a maintenance window.
    #[oai(
        path = "/api/alerting/maintenance/:id",
        method = "put",
        operation_id = "replaceMaintenanceWindow"
    )]
    async fn replace(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        id: Path<Uuid>,
        body: Json<MaintenanceRequest>,
    ) -> ApiResult<Json<MaintenanceView>> {
        let saved = UpdateRouting {
            id: id.0,
            spec: body.0.spec()?,
        }
        .run(&ctx.domain, auth.caller())
        .await?;
        Ok(Json(saved.into()))
    }

    /// Delete a maintenance window; it ends at once.
    #[oai(
        path = "/api/alerting/maintenance/:id",
        method = "delete",
        operation_id = "deleteMaintenanceWindow"
    )]
    async fn delete(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        id: Path<Uuid>,
    ) -> ApiResult<Json<Done>> {
        DeleteRouting::<WindowSpec>::new(id.0)
            .run(&ctx.domain, auth.caller())
            .await?;
        Ok(done())
    }
}
