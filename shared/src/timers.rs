//! Per-subscription one-time timers: each subscription with a next action
//! keeps one EventBridge Scheduler schedule, `sub-<user>`, `at(...)` that
//! time, `ActionAfterCompletion: DELETE`, invoking the renewal sweep with
//! `{"subscription_user": <user>}`. They wake the sweep at the right
//! second; the `rate(...)` sweep stays the safety net, since Scheduler
//! promises no exactly-once and a failed call here only leaves the
//! subscription to it. So no failure here ever fails a user's operation:
//! [`SubscriptionTimers::retime`] logs it.

use aws_config::SdkConfig;
use aws_sdk_scheduler::Client;
use aws_sdk_scheduler::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_scheduler::types::{ActionAfterCompletion, FlexibleTimeWindow, FlexibleTimeWindowMode, Target};
use chrono::{DateTime, NaiveDateTime, Timelike, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::UserId;

/// The schedule group unless `SCHEDULE_GROUP` names another.
pub const DEFAULT_SCHEDULE_GROUP: &str = "tokenbill";
/// The `at(...)` format: UTC, whole seconds.
const AT_FORMAT: &str = "%Y-%m-%dT%H:%M:%S";

/// What a subscription's schedule hands the sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerEvent {
    pub subscription_user: UserId,
}

#[derive(Debug, thiserror::Error)]
pub enum TimerError {
    #[error("EventBridge Scheduler {operation} failed: {message}")]
    Scheduler { operation: &'static str, message: String },
    #[error("schedule {name} is not ours: {problem}")]
    Foreign { name: String, problem: String },
}

impl TimerError {
    fn from_sdk<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(
        operation: &'static str,
        err: SdkError<E, R>,
    ) -> Self {
        let message = match err.as_service_error() {
            Some(service) => format!("{}: {}", service.code().unwrap_or("?"), service.message().unwrap_or("")),
            None => aws_sdk_scheduler::error::DisplayErrorContext(&err).to_string(),
        };
        TimerError::Scheduler { operation, message }
    }
}

/// A schedule whose time has come (see [`SubscriptionTimers::due`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueTimer {
    pub name: String,
    pub user: UserId,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct SubscriptionTimers {
    client: Client,
    group: String,
    sweep_arn: String,
    role_arn: String,
}

impl SubscriptionTimers {
    pub fn new(
        client: Client,
        group: impl Into<String>,
        sweep_arn: impl Into<String>,
        role_arn: impl Into<String>,
    ) -> Self {
        Self {
            client,
            group: group.into(),
            sweep_arn: sweep_arn.into(),
            role_arn: role_arn.into(),
        }
    }

    /// From `SWEEP_FUNCTION_ARN`, `SCHEDULER_ROLE_ARN` and `SCHEDULE_GROUP`;
    /// `None` without the first two (only the rate sweep then runs).
    pub fn from_env(sdk: &SdkConfig) -> Option<Self> {
        let (Ok(sweep), Ok(role)) = (std::env::var("SWEEP_FUNCTION_ARN"), std::env::var("SCHEDULER_ROLE_ARN")) else {
            tracing::info!("SWEEP_FUNCTION_ARN or SCHEDULER_ROLE_ARN unset: no per-subscription schedules");
            return None;
        };
        let group = std::env::var("SCHEDULE_GROUP").unwrap_or_else(|_| DEFAULT_SCHEDULE_GROUP.to_owned());
        Some(Self::new(Client::new(sdk), group, sweep, role))
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn group(&self) -> &str {
        &self.group
    }

    /// One name per subscription, so creating it again is updating it.
    pub fn name(user: UserId) -> String {
        format!("sub-{user}")
    }

    /// Creates the group if missing (the template declares it in AWS; the
    /// local runner and tests make their own).
    pub async fn ensure_group(&self) -> Result<bool, TimerError> {
        match self.client.create_schedule_group().name(&self.group).send().await {
            Ok(_) => Ok(true),
            Err(err) if err.as_service_error().is_some_and(|e| e.is_conflict_exception()) => Ok(false),
            Err(err) => Err(TimerError::from_sdk("CreateScheduleGroup", err)),
        }
    }

    /// Points `user`'s schedule at `at`, or deletes it for `None`.
    pub async fn set(&self, user: UserId, at: Option<DateTime<Utc>>) -> Result<(), TimerError> {
        match at {
            Some(at) => self.put(user, at).await,
            None => self.delete(user).await,
        }
    }

    /// [`Self::set`], a failure logged: the rate sweep covers it.
    pub async fn retime(&self, user: UserId, at: Option<DateTime<Utc>>) {
        if let Err(err) = self.set(user, at).await {
            tracing::warn!(%user, error = %err, "could not set the subscription's schedule; the rate sweep covers it");
        }
    }

    async fn put(&self, user: UserId, at: DateTime<Utc>) -> Result<(), TimerError> {
        let name = Self::name(user);
        let expression = at_expression(at);
        let input = serde_json::to_string(&TimerEvent {
            subscription_user: user,
        })
        .map_err(|e| TimerError::Foreign {
            name: name.clone(),
            problem: e.to_string(),
        })?;
        let target = Target::builder()
            .arn(&self.sweep_arn)
            .role_arn(&self.role_arn)
            .input(input)
            .build()
            .map_err(|e| TimerError::Scheduler {
                operation: "Target",
                message: e.to_string(),
            })?;
        let window = FlexibleTimeWindow::builder()
            .mode(FlexibleTimeWindowMode::Off)
            .build()
            .map_err(|e| TimerError::Scheduler {
                operation: "FlexibleTimeWindow",
                message: e.to_string(),
            })?;
        let created = self
            .client
            .create_schedule()
            .group_name(&self.group)
            .name(&name)
            .schedule_expression(&expression)
            .schedule_expression_timezone("UTC")
            .flexible_time_window(window.clone())
            .target(target.clone())
            .action_after_completion(ActionAfterCompletion::Delete)
            .send()
            .await;
        match created {
            Ok(_) => Ok(()),
            // It exists: move it.
            Err(err) if err.as_service_error().is_some_and(|e| e.is_conflict_exception()) => self
                .client
                .update_schedule()
                .group_name(&self.group)
                .name(&name)
                .schedule_expression(&expression)
                .schedule_expression_timezone("UTC")
                .flexible_time_window(window)
                .target(target)
                .action_after_completion(ActionAfterCompletion::Delete)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| TimerError::from_sdk("UpdateSchedule", e)),
            Err(err) => Err(TimerError::from_sdk("CreateSchedule", err)),
        }
    }

    /// Deletes `user`'s schedule; one already gone is fine.
    pub async fn delete(&self, user: UserId) -> Result<(), TimerError> {
        self.delete_named(&Self::name(user)).await
    }

    async fn delete_named(&self, name: &str) -> Result<(), TimerError> {
        match self
            .client
            .delete_schedule()
            .group_name(&self.group)
            .name(name)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                Ok(())
            }
            Err(err) => Err(TimerError::from_sdk("DeleteSchedule", err)),
        }
    }

    /// `user`'s schedule time, if it has one.
    pub async fn scheduled_at(&self, user: UserId) -> Result<Option<DateTime<Utc>>, TimerError> {
        let name = Self::name(user);
        match self
            .client
            .get_schedule()
            .group_name(&self.group)
            .name(&name)
            .send()
            .await
        {
            Ok(schedule) => {
                let expression = schedule.schedule_expression().unwrap_or_default();
                parse_at(expression).map(Some).ok_or_else(|| TimerError::Foreign {
                    name,
                    problem: format!("expression {expression}"),
                })
            }
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                Ok(None)
            }
            Err(err) => Err(TimerError::from_sdk("GetSchedule", err)),
        }
    }

    /// The group's schedules whose `at(...)` time is `now` or earlier.
    /// For the local runner, which fires them itself (moto keeps
    /// schedules but never fires them); AWS fires them in production.
    pub async fn due(&self, now: DateTime<Utc>) -> Result<Vec<DueTimer>, TimerError> {
        let mut due = Vec::new();
        let mut pages = self
            .client
            .list_schedules()
            .group_name(&self.group)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| TimerError::from_sdk("ListSchedules", e))?;
            for summary in page.schedules() {
                let Some(user) = summary
                    .name()
                    .and_then(|name| name.strip_prefix("sub-"))
                    .and_then(|id| id.parse::<UserId>().ok())
                else {
                    continue;
                };
                // The summary has no expression: read the schedule.
                match self.scheduled_at(user).await? {
                    Some(at) if at <= now => due.push(DueTimer {
                        name: Self::name(user),
                        user,
                        at,
                    }),
                    _ => {}
                }
            }
        }
        Ok(due)
    }

    /// Removes a fired schedule, as `ActionAfterCompletion: DELETE` does,
    /// unless it was moved meanwhile (to a time other than `fired.at`).
    pub async fn complete(&self, fired: &DueTimer) -> Result<(), TimerError> {
        if self.scheduled_at(fired.user).await? == Some(fired.at) {
            self.delete_named(&fired.name).await?;
        }
        Ok(())
    }
}

/// `at(yyyy-mm-ddThh:mm:ss)`, rounded up to the second: a schedule must
/// never wake the sweep before the action is due.
pub fn at_expression(at: DateTime<Utc>) -> String {
    let whole = at.with_nanosecond(0).unwrap_or(at);
    let whole = if whole < at {
        whole + chrono::Duration::seconds(1)
    } else {
        whole
    };
    format!("at({})", whole.format(AT_FORMAT))
}

/// The time of an `at(...)` expression (UTC).
pub fn parse_at(expression: &str) -> Option<DateTime<Utc>> {
    let inner = expression.strip_prefix("at(")?.strip_suffix(')')?;
    NaiveDateTime::parse_from_str(inner, AT_FORMAT)
        .ok()
        .map(|t| t.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_expressions_round_up_to_the_second_and_parse_back() {
        let at = DateTime::parse_from_rfc3339("2026-01-02T03:04:05.250Z")
            .unwrap()
            .to_utc();
        assert_eq!(at_expression(at), "at(2026-01-02T03:04:06)");
        let exact = DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z").unwrap().to_utc();
        assert_eq!(at_expression(exact), "at(2026-01-02T03:04:05)");
        assert_eq!(parse_at(&at_expression(exact)), Some(exact));
        assert_eq!(parse_at("rate(1 minute)"), None);
    }
}
