//! `payments check INVOICE`: an invoice next to its provider's own record
//! (Robokassa's `OpStateExt`), and with `--credit` the repair of a payment
//! whose ResultURL never arrived.

use std::io::Write;

use rust_decimal::Decimal;
use tokenbill::domain::invoice::{Invoice, InvoiceStatus, Provider};
use tokenbill::domain::{Currency, InvoiceId, Money};
use tokenbill::payments::robokassa::{self, OpState, RobokassaConfig, RobokassaError};
use tokenbill::store::{PaymentProof, Store};

use crate::AdminError;

/// What the check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Paid at the provider and credited, or neither.
    Consistent,
    /// Paid at the provider, not credited here (and not credited now).
    PaidNotCredited,
    /// Paid at the provider, and credited by this run (`--credit`).
    CreditedNow,
    /// Credited here while the provider does not report it paid.
    CreditedNotPaid,
    /// Nothing to compare: another provider, or no `InvId` yet.
    Unchecked,
}

/// Robokassa from the environment (passwords also from SSM through
/// `NAME_PARAM`, like the functions): `None` when `ROBOKASSA_LOGIN` is unset.
pub async fn robokassa_from_env(config: &aws_config::SdkConfig) -> Result<Option<RobokassaConfig>, AdminError> {
    if std::env::var("ROBOKASSA_LOGIN").is_err() {
        return Ok(None);
    }
    let secrets = tokenbill::secrets::load(config, &["ROBOKASSA_PASSWORD1", "ROBOKASSA_PASSWORD2"])
        .await
        .map_err(AdminError::Input)?;
    RobokassaConfig::from_lookup(|name| secrets.get(name).cloned().or_else(|| std::env::var(name).ok()))
        .map(Some)
        .map_err(|e| AdminError::Input(format!("Robokassa: {e}")))
}

/// Prints the invoice and the provider's record of it, and the verdict.
pub async fn check(
    store: &Store,
    robokassa: Option<&RobokassaConfig>,
    http: &reqwest::Client,
    invoice: &str,
    credit: bool,
    out: &mut impl Write,
) -> Result<Verdict, AdminError> {
    let id = InvoiceId::new(invoice).map_err(|e| AdminError::Input(e.to_string()))?;
    let invoice = store
        .invoice(&id)
        .await?
        .ok_or_else(|| AdminError::Input(format!("no invoice {id}")))?;
    writeln!(
        out,
        "invoice {}: user {}, {} via {}, {}{}, provider ref {}",
        invoice.id,
        invoice.user,
        invoice.amount_due,
        invoice.provider.as_str(),
        invoice.status.as_str(),
        if invoice.paid_late { " (late)" } else { "" },
        invoice.provider_ref.as_deref().unwrap_or("-"),
    )?;
    if invoice.provider != Provider::Robokassa {
        writeln!(out, "no provider check for {}", invoice.provider.as_str())?;
        return Ok(Verdict::Unchecked);
    }
    let config = robokassa.ok_or_else(|| {
        AdminError::Input("Robokassa is not configured (ROBOKASSA_LOGIN, ROBOKASSA_PASSWORD1/2)".into())
    })?;
    let Some(inv_id) = invoice.provider_ref.as_deref() else {
        writeln!(out, "robokassa: no InvId yet (the payment page was never opened)")?;
        return Ok(Verdict::Unchecked);
    };
    let inv_id: u32 = inv_id
        .parse()
        .map_err(|_| AdminError::Input(format!("provider ref {inv_id:?} is not an InvId")))?;
    let state = match robokassa::op_state(http, config, inv_id).await {
        Ok(state) => Some(state),
        // 3: Robokassa has no such invoice (never paid, or not yet created).
        Err(RobokassaError::Service { code: 3, .. }) => None,
        Err(err) => return Err(AdminError::Input(format!("OpStateExt for InvId {inv_id}: {err}"))),
    };
    match &state {
        Some(state) => writeln!(
            out,
            "robokassa InvId {inv_id}: state {}{}, OutSum {}",
            state.state_code.map_or_else(|| "-".to_owned(), |code| code.to_string()),
            if state.is_paid() { " (paid)" } else { "" },
            state.out_sum.map_or_else(|| "-".to_owned(), |sum| sum.to_string()),
        )?,
        None => writeln!(out, "robokassa InvId {inv_id}: unknown to Robokassa")?,
    }
    let paid_there = state.as_ref().is_some_and(OpState::is_paid);
    let credited = invoice.status == InvoiceStatus::Paid;
    let verdict = match (paid_there, credited) {
        (true, true) | (false, false) => Verdict::Consistent,
        (false, true) => Verdict::CreditedNotPaid,
        (true, false) if credit => {
            let state = state.as_ref().ok_or_else(|| AdminError::Input("no state".into()))?;
            credit_from_state(store, &invoice, inv_id, state).await?;
            Verdict::CreditedNow
        }
        (true, false) => Verdict::PaidNotCredited,
    };
    let text = match verdict {
        Verdict::Consistent if credited => "ok: paid and credited",
        Verdict::Consistent => "ok: not paid",
        Verdict::PaidNotCredited => "MISMATCH: paid at Robokassa, not credited; run again with --credit",
        Verdict::CreditedNow => "credited now: paid at Robokassa, its ResultURL had not arrived",
        Verdict::CreditedNotPaid => "MISMATCH: credited here, not paid at Robokassa; investigate",
        Verdict::Unchecked => "unchecked",
    };
    writeln!(out, "{text}")?;
    Ok(verdict)
}

/// Credits a payment Robokassa reports paid, with the same checks as
/// ResultURL: the operation names this invoice and paid its amount.
async fn credit_from_state(store: &Store, invoice: &Invoice, inv_id: u32, state: &OpState) -> Result<(), AdminError> {
    let named = state
        .user_fields
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case("Shp_invoice"))
        .map(|(_, value)| value.as_str());
    if named != Some(invoice.id.as_str()) {
        return Err(AdminError::Input(format!(
            "Robokassa's InvId {inv_id} names invoice {named:?}, not {}: not credited",
            invoice.id
        )));
    }
    let kopecks = state
        .out_sum
        .and_then(robokassa::amount_in_kopecks)
        .ok_or_else(|| AdminError::Input("Robokassa reports no usable OutSum: not credited".into()))?;
    let proof = PaymentProof {
        invoice_id: invoice.id.clone(),
        provider: Provider::Robokassa,
        amount: Money::new(Decimal::new(kopecks, 2), Currency::Rub)?,
        provider_ref: Some(inv_id.to_string()),
        renewal: robokassa::renewal_of(invoice, inv_id),
    };
    store.confirm_payment(&proof, Vec::new()).await?;
    Ok(())
}
