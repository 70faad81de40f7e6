//! `retryStrategy`: a Retry node whose children `name(0)`, `name(1)`, … are the attempts, with
//! Argo's policies, limit, `expression` and backoff. Each attempt links to the span of the one it replaces.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Executor;
use super::call::Call;
use super::nodes::NodeResult;
use super::scope::Scope;
use crate::workflow::record::{NodeType, Phase};
use crate::workflow::runner::Runner;
use crate::workflow::spec::{RetryPolicy, RetryStrategy, Template};
use crate::workflow::{clock, expression, vars};

/// Whether `policy` retries an attempt that ended in `phase`.
fn retries(policy: RetryPolicy, phase: Phase) -> bool {
    match phase {
        Phase::Failed => matches!(policy, RetryPolicy::Always | RetryPolicy::OnFailure),
        Phase::Error => matches!(policy, RetryPolicy::Always | RetryPolicy::OnError),
        _ => false,
    }
}

/// `retryStrategy.backoff`: the wait before attempt n+1 is `base * factor^n`, at most `cap`;
/// no attempt starts after `max_duration`.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    base: Duration,
    factor: f64,
    cap: Option<Duration>,
    max_duration: Option<Duration>,
}

impl Backoff {
    fn from_spec(strategy: &RetryStrategy) -> Option<Self> {
        let b = strategy.backoff.as_ref()?;
        let duration = |d: &Option<crate::workflow::spec::Scalar>| {
            d.as_ref().and_then(|d| vars::parse_duration(d.as_str()))
        };
        Some(Self {
            base: duration(&b.duration)?,
            factor: b
                .factor
                .as_ref()
                .and_then(|f| f.as_str().parse::<f64>().ok())
                .unwrap_or(1.0),
            cap: duration(&b.cap),
            max_duration: duration(&b.max_duration),
        })
    }

    fn wait_before(&self, attempt: u32) -> Duration {
        let wait = self.base.mul_f64(self.factor.powi(attempt as i32));
        self.cap.map_or(wait, |c| wait.min(c))
    }
}

/// A template's retry strategy, resolved for one call.
struct RetryPlan {
    /// The retries allowed after the first attempt; `None` is unlimited.
    limit: Option<u32>,
    policy: RetryPolicy,
    backoff: Option<Backoff>,
    /// `retryStrategy.expression`, the template's variables substituted; it sees only
    /// `retries` and `lastRetry.*` (as in Argo), which `{{...}}` tags may also name.
    expression: Option<String>,
}

impl RetryPlan {
    /// A templated `limit` that does not resolve to a whole number is an error: never
    /// unlimited retries by default.
    fn new(strategy: &RetryStrategy, scope: &Scope) -> Result<Self, String> {
        let limit = match &strategy.limit {
            None => None,
            Some(l) => {
                let text = vars::substitute(l.as_str(), scope)
                    .map_err(|e| format!("retryStrategy.limit: {e}"))?;
                let limit = text.trim().parse::<u32>().map_err(|_| {
                    format!("retryStrategy.limit: expected a whole number, got {text:?}")
                })?;
                Some(limit)
            }
        };
        Ok(Self {
            limit,
            policy: strategy.retry_policy.unwrap_or(RetryPolicy::OnFailure),
            backoff: Backoff::from_spec(strategy),
            expression: strategy
                .expression
                .as_deref()
                .map(|e| vars::substitute_known(e, scope)),
        })
    }

    /// Whether `retryStrategy.expression` lets attempt `attempt` (which ended as `child`) be
    /// retried; an expression that fails is an error, which ends the Retry node.
    fn expression_allows(&self, child: &NodeResult, attempt: u32) -> Result<bool, String> {
        let Some(text) = &self.expression else {
            return Ok(true);
        };
        let duration = clock::between(child.started_at.as_deref(), child.finished_at.as_deref())
            .unwrap_or_default()
            .as_secs_f64();
        let scope = Scope::from([
            ("retries".to_string(), attempt.to_string()),
            (
                "lastRetry.exitCode".to_string(),
                child
                    .outputs
                    .exit_code
                    .clone()
                    .unwrap_or_else(|| "-1".into()),
            ),
            ("lastRetry.status".to_string(), child.phase.as_str().into()),
            ("lastRetry.duration".to_string(), duration.to_string()),
            (
                "lastRetry.message".to_string(),
                child.message.clone().unwrap_or_default(),
            ),
        ]);
        let text =
            vars::substitute(text, &scope).map_err(|e| format!("retryStrategy.expression: {e}"))?;
        expression::eval_bool(&text, &scope).map_err(|e| format!("retryStrategy.expression: {e}"))
    }
}

/// What to do after an attempt.
enum Next {
    Stop {
        message: Option<String>,
        /// Set when the Retry node ends in Error rather than in its last attempt's phase.
        error: bool,
    },
    Retry,
}

impl<R: Runner> Executor<R> {
    pub(super) async fn execute_retry(self: Arc<Self>, call: Call, tmpl: Template) -> NodeResult {
        let strategy = tmpl
            .retry_strategy
            .as_ref()
            .expect("retry strategy present");
        let id = self.nodes.begin_composite(&call.place(), NodeType::Retry);
        let plan = self
            .scope_for(&tmpl, &call.args)
            .and_then(|scope| RetryPlan::new(strategy, &scope));
        let plan = match plan {
            Ok(plan) => plan,
            Err(message) => return self.nodes.fail(&id, Phase::Error, message),
        };
        let started = Instant::now();
        let mut attempt = 0u32;
        let mut replaces = None;
        let (last, message_override, error) = loop {
            let child = self
                .clone()
                .execute(Call {
                    name: format!("{}({attempt})", call.name),
                    display: format!("{}({attempt})", call.display),
                    retry_index: Some(attempt),
                    replaces,
                    ..call.clone()
                })
                .await;
            self.nodes.add_child(&id, &child.id);
            replaces = self.nodes.span_of(&child.id);
            match self
                .after_attempt(&call, &plan, &child, attempt, started)
                .await
            {
                Next::Stop { message, error } => break (child, message, error),
                Next::Retry => attempt += 1,
            }
        };
        let message = message_override.or(last.message.clone());
        self.nodes.finish(
            &id,
            if error { Phase::Error } else { last.phase },
            message,
            last.outputs.clone(),
            vec![last.id.clone()],
        )
    }

    /// Whether `child` (attempt number `attempt`) is retried, after its backoff. A resumed run
    /// whose next attempt is already recorded does not wait for the backoff again.
    async fn after_attempt(
        &self,
        call: &Call,
        plan: &RetryPlan,
        child: &NodeResult,
        attempt: u32,
        started: Instant,
    ) -> Next {
        let retry = retries(plan.policy, child.phase);
        if !retry || plan.limit.is_some_and(|l| attempt >= l) || self.stopping().is_some() {
            return Next::Stop {
                message: None,
                error: false,
            };
        }
        match plan.expression_allows(child, attempt) {
            Ok(true) => {}
            Ok(false) => {
                return Next::Stop {
                    message: Some("retryStrategy.expression evaluated to false".into()),
                    error: false,
                };
            }
            Err(message) => {
                return Next::Stop {
                    message: Some(message),
                    error: true,
                };
            }
        }
        if let Some(backoff) = plan.backoff {
            let wait = backoff.wait_before(attempt);
            if backoff
                .max_duration
                .is_some_and(|m| started.elapsed() + wait > m)
            {
                return Next::Stop {
                    message: Some("Max duration limit exceeded".to_string()),
                    error: false,
                };
            }
            if !self
                .nodes
                .was_recorded(&format!("{}({})", call.name, attempt + 1))
            {
                tokio::time::sleep(wait).await;
            }
        }
        Next::Retry
    }
}
