//! `reboot` and `shutdown`: the configured power command, with its time argument.

use tokio::process::Command;
use tracing::info;

use super::{STDERR_CAP, STDOUT_CAP};
use crate::jobs::ctx::{JobCtx, Outcome};

/// `shutdown`'s time argument: `now`, or `+minutes` rounded up.
pub(crate) fn power_delay(delay_s: u32) -> String {
    if delay_s == 0 {
        "now".into()
    } else {
        format!("+{}", delay_s.div_ceil(60))
    }
}

pub(super) async fn power(ctx: &mut JobCtx<'_>, flag: &str, delay_s: u32) -> Outcome {
    let mut cmd = Command::new(&ctx.shared.power_command);
    cmd.arg(flag).arg(power_delay(delay_s));
    info!(
        job_id = %uuid::Uuid::from_bytes(ctx.job_id),
        command = %ctx.shared.power_command,
        flag,
        delay_s,
        "running the power command"
    );
    let timeout_s = ctx.timeout_s;
    let run = ctx.run(&mut cmd, true, STDOUT_CAP, STDERR_CAP).await;
    Outcome::from_run(run, timeout_s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_delays() {
        assert_eq!(power_delay(0), "now");
        assert_eq!(power_delay(1), "+1");
        assert_eq!(power_delay(60), "+1");
        assert_eq!(power_delay(61), "+2");
    }
}
