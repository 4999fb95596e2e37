//! Agent metrics: one agent's series over a time range (the coarsest stored level that
//! satisfies the step), the same as CSV, and the fleet view for dashboards. The operations live
//! in `reap3r_actors::metrics`; this maps HTTP to them.

use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::{Json, PlainText};
use poem_openapi::{ApiResponse, Object, OpenApi};
use reap3r_actors::metrics::{
    ExportMetrics, FleetEntry, FleetMetrics, MetricPoint, MetricSeries, MetricsAnswer, QueryMetrics,
};
use reap3r_store::Uuid;

use super::ApiTags;
use crate::auth::Auth;
use crate::context::ApiContext;
use crate::error::ApiResult;

#[derive(Debug, Object)]
pub struct MetricPointView {
    /// Start of the step bucket (unix ms).
    pub t: i64,
    pub min: f64,
    pub avg: f64,
    pub max: f64,
    /// The latest value in the bucket.
    pub last: f64,
    /// Samples the bucket covers.
    pub count: u64,
}

#[derive(Debug, Object)]
pub struct MetricSeriesView {
    /// Catalog name, e.g. `cpu.percent`.
    pub metric: String,
    /// Mount point or interface for labelled metrics, empty otherwise.
    pub label: String,
    pub points: Vec<MetricPointView>,
}

#[derive(Debug, Object)]
pub struct MetricsView {
    /// The stored level read: `raw`, `1m`, `5m`, `1h` or `1d`.
    pub level: String,
    /// Step of the points, in seconds.
    pub step_s: i64,
    pub series: Vec<MetricSeriesView>,
}

#[derive(Debug, Object)]
pub struct FleetMetricView {
    pub agent_id: Uuid,
    pub hostname: String,
    /// The mount or interface the value is for (labelled metrics), empty otherwise.
    pub label: String,
    /// The agent's latest value.
    pub value: f64,
    /// When that sample was taken (unix ms).
    pub taken_at: i64,
}

fn point(p: MetricPoint) -> MetricPointView {
    MetricPointView {
        t: p.at_ms,
        min: p.min,
        avg: p.avg,
        max: p.max,
        last: p.last,
        count: p.count,
    }
}

impl From<MetricsAnswer> for MetricsView {
    fn from(a: MetricsAnswer) -> Self {
        Self {
            level: a.level.as_str().into(),
            step_s: a.step_ms / 1000,
            series: a
                .series
                .into_iter()
                .map(|s: MetricSeries| MetricSeriesView {
                    metric: s.metric.as_str().into(),
                    label: s.label,
                    points: s.points.into_iter().map(point).collect(),
                })
                .collect(),
        }
    }
}

impl From<FleetEntry> for FleetMetricView {
    fn from(e: FleetEntry) -> Self {
        Self {
            agent_id: e.agent_id,
            hostname: e.hostname,
            label: e.label,
            value: e.value,
            taken_at: e.taken_at_ms,
        }
    }
}

#[derive(Debug, ApiResponse)]
pub enum CsvExport {
    /// `time_ms,metric,label,min,avg,max,last,count`, one line per point.
    #[oai(status = 200, content_type = "text/csv; charset=utf-8")]
    Ok(PlainText<String>),
}

pub struct MetricsApi;

#[OpenApi(tag = "ApiTags::Metrics")]
impl MetricsApi {
    /// One agent's metrics between `from` and `to`, one point per `step`, read from the
    /// coarsest stored level that satisfies the step (raw below 1 minute, then 1m, 5m, 1h, 1d).
    #[oai(
        path = "/api/agents/:id/metrics",
        method = "get",
        operation_id = "getAgentMetrics"
    )]
    #[allow(clippy::too_many_arguments)]
    async fn series(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        id: Path<Uuid>,
        /// Comma-separated catalog names, e.g. `cpu.percent,disk.used_percent` (at most 16).
        #[oai(validator(max_length = 512))]
        names: Query<String>,
        /// From this time (unix ms, inclusive).
        from: Query<i64>,
        /// Until this time (unix ms, exclusive).
        to: Query<i64>,
        /// Seconds per point, 1 to 2592000; `(to - from) / step` is at most 2000.
        #[oai(validator(minimum(value = "1"), maximum(value = "2592000")))]
        step: Query<i64>,
    ) -> ApiResult<Json<MetricsView>> {
        let answer = query(id.0, names.0, from.0, to.0, step.0)
            .run(&ctx.domain, auth.caller())
            .await?;
        Ok(Json(answer.into()))
    }

    /// The same query as CSV.
    #[oai(
        path = "/api/agents/:id/metrics/export",
        method = "get",
        operation_id = "exportAgentMetrics"
    )]
    #[allow(clippy::too_many_arguments)]
    async fn export(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        id: Path<Uuid>,
        /// Comma-separated catalog names (at most 16).
        #[oai(validator(max_length = 512))]
        names: Query<String>,
        /// From this time (unix ms, inclusive).
        from: Query<i64>,
        /// Until this time (unix ms, exclusive).
        to: Query<i64>,
        /// Seconds per point, 1 to 2592000; `(to - from) / step` is at most 2000.
        #[oai(validator(minimum(value = "1"), maximum(value = "2592000")))]
        step: Query<i64>,
    ) -> ApiResult<CsvExport> {
        let csv = ExportMetrics(query(id.0, names.0, from.0, to.0, step.0))
            .run(&ctx.domain, auth.caller())
            .await?;
        Ok(CsvExport::Ok(PlainText(csv)))
    }

    /// Fleet view for dashboards: each agent's latest value of one metric, highest first.
    #[allow(clippy::too_many_arguments)]
    #[oai(
        path = "/api/metrics/fleet",
        method = "get",
        operation_id = "getFleetMetrics"
    )]
    async fn fleet(
        &self,
        ctx: Data<&ApiContext>,
        auth: Auth,
        /// Catalog name, e.g. `disk.used_percent`.
        #[oai(validator(max_length = 64))]
        metric: Query<String>,
        /// For labelled metrics, one mount or interface; without it an agent's highest counts.
        #[oai(validator(max_length = 128))]
        label: Query<Option<String>>,
        /// How many agents, 1 to 1000, default 10.
        #[oai(validator(minimum(value = "1"), maximum(value = "1000")))]
        top: Query<Option<u32>>,
        /// Only agents with this tag.
        tag: Query<Option<Uuid>>,
        /// Only agents in this folder.
        folder_id: Query<Option<Uuid>>,
    ) -> ApiResult<Json<Vec<FleetMetricView>>> {
        let entries = FleetMetrics {
            metric: metric.0,
            label: label.0,
            top: top.0,
            tag_id: tag.0,
            folder_id: folder_id.0,
        }
        .run(&ctx.domain, auth.caller())
        .await?;
        Ok(Json(entries.into_iter().map(Into::into).collect()))
    }
}

fn query(agent_id: Uuid, names: String, from_ms: i64, to_ms: i64, step_s: i64) -> QueryMetrics {
    QueryMetrics {
        agent_id,
        names,
        from_ms,
        to_ms,
        step_s,
    }
}

#[cfg(test)]
mod tests {
    use reap3r_actors::metrics::{MAX_FLEET_TOP, MAX_LABEL_LEN, MAX_NAMES_PARAM_CHARS, MAX_STEP_S};
    use serde_json::Value;

    /// The schema's literal bounds are the domain's constants.
    #[test]
    fn schema_bounds_are_the_domain_limits() {
        let spec: Value = serde_json::from_str(&crate::openapi_json()).unwrap();
        let param = |path: &str, name: &str| {
            spec["paths"][path]["get"]["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == name)
                .unwrap()["schema"]
                .clone()
        };
        for path in [
            "/api/agents/{id}/metrics",
            "/api/agents/{id}/metrics/export",
        ] {
            assert_eq!(param(path, "step")["maximum"], MAX_STEP_S as f64);
            assert_eq!(param(path, "names")["maxLength"], MAX_NAMES_PARAM_CHARS);
        }
        let fleet = "/api/metrics/fleet";
        assert_eq!(param(fleet, "top")["maximum"], f64::from(MAX_FLEET_TOP));
        assert_eq!(param(fleet, "label")["maxLength"], MAX_LABEL_LEN);
    }
}
