//! What each update does, within three DynamoDB requests:
//!
//! 1. the claim of the update id ([`ClaimMode::Done`] for updates that only
//!    display, [`ClaimMode::Lease`] for those that change state);
//! 2. one consistent batch read: the user's profile, balance, subscription
//!    and pending promo code, plus whatever the update names (the code
//!    typed, the tariff being bought, the user an operator asks about);
//! 3. at most one more request: a history page, today's stats, or the one
//!    transaction that carries the update's effect together with its
//!    done-mark (so an effect and its de-duplication commit together).

use aws_sdk_dynamodb::types::TransactWriteItem;
use teloxide_core::types::{CallbackQuery, ChatId, ChatMemberUpdated, Message, MessageId, Update, UpdateKind};
use tokenbill::domain::invoice::{InvoiceStatus, Provider};
use tokenbill::domain::ledger::CreditKind;
use tokenbill::domain::promo::{PromoCode, PromoCodeText, PromoEffect, PromoRejection};
use tokenbill::domain::user::{Awaiting, Language, Registration, User};
use tokenbill::domain::{Currency, IdempotencyKey, TariffId, Tokens, TxId, UserId, pricing};
use tokenbill::store::keys::{self, Key};
use tokenbill::store::{BalanceRequest, ClaimMode, NewInvoice, StoreError, UserChange, UserView};

use teloxide_core::RequestError;
use teloxide_core::payloads::{CreateInvoiceLink, EditUserStarSubscription};
use teloxide_core::requests::JsonRequest;
use teloxide_core::types::{LabeledPrice, Seconds, TelegramTransactionId};
use tokenbill::domain::notification::NotificationId;
use tokenbill::payments::stars::{self, PreCheckoutRefusal};
use tokenbill::payments::{self, PaymentStart};

use crate::callback::Callback;
use crate::screens::{self, Screen};
use crate::texts::{escape, promo_rejection, texts};
use crate::{BotConfig, Reply, Webhook};

/// Entries per history page.
const HISTORY_PAGE: i32 = 10;

/// What an update needs, decided before any I/O.
#[derive(Debug, Clone)]
pub struct Plan {
    pub mode: ClaimMode,
    pub user: UserId,
    pub extra: Vec<Key>,
}

/// The update being handled: its id, and whether its done-mark has been
/// written yet.
pub(crate) struct Ctx {
    pub update_id: u32,
    pub mode: ClaimMode,
    pub marked: bool,
    /// Calls to make before the button's answer (a Stars invoice).
    pub also: Vec<Reply>,
}

impl Ctx {
    /// The done-mark to add to the update's effect transaction (once).
    fn mark(&mut self, webhook: &Webhook) -> Result<Vec<TransactWriteItem>, StoreError> {
        if self.mode != ClaimMode::Lease || self.marked {
            return Ok(Vec::new());
        }
        self.marked = true;
        Ok(vec![webhook.store.complete_update_item(self.update_id)?])
    }
}

/// Where a screen goes: a new message, or the message whose button was pressed.
#[derive(Clone, Copy)]
enum Target {
    Chat(ChatId),
    Message(ChatId, MessageId),
}

impl Target {
    fn show(self, screen: Screen) -> Reply {
        match self {
            Target::Chat(chat) => Reply::Send {
                chat,
                text: screen.text,
                keyboard: screen.keyboard,
            },
            Target::Message(chat, message) => Reply::Edit {
                chat,
                message,
                text: screen.text,
                keyboard: screen.keyboard,
            },
        }
    }
}

fn registration(from: &teloxide_core::types::User) -> Option<Registration> {
    let id = UserId::new(i64::try_from(from.id.0).ok()?).ok()?;
    Some(Registration {
        id,
        username: from.username.clone(),
        first_name: from.first_name.clone(),
        last_name: from.last_name.clone(),
        language: Language::from_telegram(from.language_code.as_deref()),
        referrer: None,
    })
}

fn promo_keys(code: &str, user: UserId) -> Vec<Key> {
    PromoCodeText::new(code).map_or_else(
        |_| Vec::new(),
        |code| vec![keys::promo(&code), keys::promo_use(&code, user)],
    )
}

/// The user as the bot sees them: stored, or as Telegram describes a
/// newcomer (who is registered by the update's write).
fn user_or_new(view: &UserView, registration: &Registration) -> (User, bool) {
    match &view.user {
        Some(user) => (user.clone(), false),
        None => (
            User {
                id: registration.id,
                username: registration.username.clone(),
                first_name: registration.first_name.clone(),
                last_name: registration.last_name.clone(),
                language: registration.language,
                first_seen: chrono::Utc::now(),
                referrer: registration.referrer,
                reachable: true,
                paid_invoices: 0,
                awaiting: None,
            },
            true,
        ),
    }
}

impl BotConfig {
    /// Decides, from the update alone, how to claim it and what to read.
    /// `None`: nothing to do (edits, channel posts, stickers...).
    pub(crate) fn plan(&self, update: &Update) -> Option<Plan> {
        match &update.kind {
            UpdateKind::Message(message) if message.successful_payment().is_some() => {
                let payment = message.successful_payment()?;
                Some(Plan {
                    mode: ClaimMode::Lease,
                    user: registration(message.from.as_ref()?)?.id,
                    extra: stars::invoice_id(&payment.invoice_payload)
                        .map(|id| keys::invoice(&id))
                        .into_iter()
                        .collect(),
                })
            }
            UpdateKind::PreCheckoutQuery(query) => Some(Plan {
                // Only an answer: a redelivery need not answer again.
                mode: ClaimMode::Done,
                user: registration(&query.from)?.id,
                extra: stars::invoice_id(&query.invoice_payload)
                    .map(|id| keys::invoice(&id))
                    .into_iter()
                    .collect(),
            }),
            UpdateKind::Message(message) => {
                let (from, text) = (message.from.as_ref()?, message.text()?);
                if !message.chat.is_private() {
                    return None;
                }
                let user = registration(from)?.id;
                let Some((command, args)) = self.command(text) else {
                    // Plain text may be a promo code the bot asked for.
                    return Some(Plan {
                        mode: ClaimMode::Lease,
                        user,
                        extra: promo_keys(text.trim(), user),
                    });
                };
                let (mode, extra) = match command.as_str() {
                    "start" => (
                        ClaimMode::Lease,
                        args.strip_prefix("promo_")
                            .map_or_else(Vec::new, |c| promo_keys(c, user)),
                    ),
                    "promo" => (ClaimMode::Lease, promo_keys(&args, user)),
                    "grant" => {
                        let target = args.split_whitespace().next().and_then(|id| id.parse::<UserId>().ok());
                        (ClaimMode::Lease, target.map(keys::profile).into_iter().collect())
                    }
                    "user" => {
                        let target = args.trim().parse::<UserId>().ok();
                        (
                            ClaimMode::Done,
                            target.map_or_else(Vec::new, |id| vec![keys::profile(id), keys::account(id)]),
                        )
                    }
                    _ => (ClaimMode::Done, Vec::new()),
                };
                Some(Plan { mode, user, extra })
            }
            UpdateKind::CallbackQuery(query) => {
                let user = registration(&query.from)?.id;
                let (mode, extra) = match query.data.as_deref().and_then(Callback::decode) {
                    Some(Callback::Pay(tariff, _)) => (ClaimMode::Lease, vec![keys::tariff(&tariff)]),
                    Some(Callback::PromoPrompt | Callback::AutoRenewSet(_) | Callback::Language(_)) => {
                        (ClaimMode::Lease, Vec::new())
                    }
                    _ => (ClaimMode::Done, Vec::new()),
                };
                Some(Plan { mode, user, extra })
            }
            UpdateKind::MyChatMember(member) if member.chat.is_private() => Some(Plan {
                mode: ClaimMode::Lease,
                user: registration(&member.from)?.id,
                extra: Vec::new(),
            }),
            _ => None,
        }
    }

    /// `/name args` or `/name@ThisBot args`; commands for other bots are not ours.
    pub(crate) fn command(&self, text: &str) -> Option<(String, String)> {
        let rest = text.strip_prefix('/')?;
        let (head, args) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        let (name, addressee) = head.split_once('@').map_or((head, None), |(n, a)| (n, Some(a)));
        if let (Some(addressee), Some(ours)) = (addressee, &self.bot_username)
            && !addressee.eq_ignore_ascii_case(ours)
        {
            return None;
        }
        Some((name.to_ascii_lowercase(), args.trim().to_owned()))
    }
}

impl Webhook {
    pub(crate) async fn dispatch(&self, update: Update, plan: Plan, ctx: &mut Ctx) -> Result<Vec<Reply>, StoreError> {
        let view = self.store.user_view(plan.user, plan.extra).await?;
        match update.kind {
            UpdateKind::Message(message) if message.successful_payment().is_some() => {
                self.on_successful_payment(message, &view, ctx).await
            }
            UpdateKind::PreCheckoutQuery(query) => Ok(vec![self.on_pre_checkout(query, &view)?]),
            UpdateKind::Message(message) => self.on_message(message, &view, ctx).await,
            UpdateKind::CallbackQuery(query) => self.on_callback(query, &view, ctx).await,
            UpdateKind::MyChatMember(member) => self.on_membership(member, &view, ctx).await,
            _ => Ok(Vec::new()),
        }
    }

    /// Profile writes for this update: `changes` to a known user, or the
    /// registration of a newcomer (with the same changes) and its count.
    fn profile_items(
        &self,
        view: &UserView,
        registration: &Registration,
        changes: &[UserChange],
    ) -> Result<Vec<TransactWriteItem>, StoreError> {
        Ok(match &view.user {
            Some(_) if changes.is_empty() => Vec::new(),
            Some(user) => vec![self.store.update_user_item(user.id, changes)?],
            None => {
                // The registration already sets the language: a chosen one
                // goes into it rather than beside it.
                let mut registration = registration.clone();
                let mut rest = Vec::new();
                for change in changes {
                    match change {
                        UserChange::Language(language) => registration.language = *language,
                        other => rest.push(other.clone()),
                    }
                }
                vec![
                    self.store.register_user_item(&registration, &rest)?,
                    self.store.count_new_user_item()?,
                ]
            }
        })
    }

    async fn on_message(&self, message: Message, view: &UserView, ctx: &mut Ctx) -> Result<Vec<Reply>, StoreError> {
        let (Some(from), Some(text)) = (message.from.as_ref(), message.text()) else {
            return Ok(Vec::new());
        };
        let Some(registration) = registration(from) else {
            return Ok(Vec::new());
        };
        let chat = message.chat.id;
        let target = Target::Chat(chat);
        let (user, _) = user_or_new(view, &registration);
        let Some((command, args)) = self.config.command(text) else {
            if user.awaiting == Some(Awaiting::PromoCode) {
                let items = self.profile_items(view, &registration, &[UserChange::Awaiting(None)])?;
                let reply = self
                    .apply_promo_with(&user, text.trim(), view, ctx, items, true)
                    .await?;
                return Ok(vec![target.show(screens::with_menu(user.language, reply))]);
            }
            return Ok(vec![target.show(Screen::text(texts(user.language).unknown_text))]);
        };
        if command == "start" {
            return self.start(registration, &args, view, ctx, target).await;
        }
        let language = user.language;
        let t = texts(language);
        let operator = self.config.operators.contains(&chat.0);
        let screen = match command.as_str() {
            "balance" => self.balance_screen(&user, view).await?,
            "buy" => screens::catalog(language, &self.catalog().await?),
            "promo" if args.is_empty() => screens::with_menu(language, t.promo_needs_code),
            "promo" => {
                let items = self.profile_items(view, &registration, &[])?;
                let touches_profile = !items.is_empty();
                screens::with_menu(
                    language,
                    self.apply_promo_with(&user, &args, view, ctx, items, touches_profile)
                        .await?,
                )
            }
            "subscription" => self.subscription_screen(&user, view).await?,
            "history" => self.history_screen(&user, None).await?,
            "language" => screens::language_menu(language),
            "help" => screens::help(language),
            "paysupport" => screens::with_menu(
                language,
                t.paysupport.replace("{contact}", &escape(&self.config.support_contact)),
            ),
            "stats" if operator => Screen::text(self.stats().await?),
            "user" if operator => Screen::text(describe_user(&args, view)?),
            "grant" if operator => Screen::text(self.grant(&args, view, ctx).await?),
            _ => Screen::text(t.unknown_text),
        };
        Ok(vec![target.show(screen)])
    }

    /// Registers (or refreshes) the user and applies a deep-link payload, in
    /// one transaction with the update's done-mark.
    async fn start(
        &self,
        mut registration: Registration,
        payload: &str,
        view: &UserView,
        ctx: &mut Ctx,
        target: Target,
    ) -> Result<Vec<Reply>, StoreError> {
        if let Some(referrer) = payload.strip_prefix("ref_").and_then(|id| id.parse::<UserId>().ok())
            && referrer != registration.id
        {
            registration.referrer = Some(referrer);
        }
        let (user, new) = user_or_new(view, &registration);
        let language = user.language;
        let mut notes = Vec::new();
        if new && registration.referrer.is_some() {
            notes.push(texts(language).referral_thanks.to_owned());
        }
        let mut items = vec![self.store.register_user_item(&registration, &[])?];
        if new {
            items.push(self.store.count_new_user_item()?);
        }
        match payload.strip_prefix("promo_") {
            Some(code) => notes.push(self.apply_promo_with(&user, code, view, ctx, items, true).await?),
            None => {
                items.extend(ctx.mark(self)?);
                self.store.write_all(items).await?;
            }
        }
        let mut replies: Vec<Reply> = notes.into_iter().map(|note| target.show(Screen::text(note))).collect();
        replies.push(target.show(screens::menu(language, &user.first_name)));
        Ok(replies)
    }

    /// Applies a code, writing `items` (and the done-mark) in the same
    /// transaction, whatever the outcome.
    async fn apply_promo_with(
        &self,
        user: &User,
        text: &str,
        view: &UserView,
        ctx: &mut Ctx,
        mut items: Vec<TransactWriteItem>,
        items_touch_profile: bool,
    ) -> Result<String, StoreError> {
        let language = user.language;
        let t = texts(language);
        let checked = match PromoCodeText::new(text) {
            Ok(code) => {
                let uses = view.promo_uses(&code, user.id)?;
                self.store
                    .evaluate_promo(user, view.promo(&code)?, uses, None)
                    .map(|promo| (promo, uses))
            }
            Err(_) => Err(PromoRejection::NotFound.into()),
        };
        let (promo, uses) = match checked {
            Ok(checked) => checked,
            Err(StoreError::Promo(rejection)) => {
                items.extend(ctx.mark(self)?);
                self.store.write_all(items).await?;
                return Ok(promo_rejection(language, rejection).to_owned());
            }
            Err(err) => return Err(err),
        };
        let shown = escape(promo.code.as_str());
        items.extend(ctx.mark(self)?);
        if let PromoEffect::BonusTokens { tokens } = promo.effect {
            return match self
                .store
                .activate_checked_promo(user, &promo, uses, items, items_touch_profile)
                .await
            {
                Ok(activation) => {
                    if let Some(queue) = &self.queue {
                        queue.publish_or_log(&[activation.notification]).await;
                    }
                    Ok(t.promo_bonus
                        .replace("{code}", &shown)
                        .replace("{tokens}", &tokens.to_string()))
                }
                Err(StoreError::Promo(rejection)) => {
                    ctx.marked = false;
                    let mark = ctx.mark(self)?;
                    self.store.write_all(mark).await?;
                    Ok(promo_rejection(language, rejection).to_owned())
                }
                Err(err) => Err(err),
            };
        }
        items.push(self.store.pending_promo_item(user.id, Some(&promo))?);
        self.store.write_all(items).await?;
        Ok(t.promo_saved.replace("{code}", &shown))
    }

    async fn on_callback(
        &self,
        query: CallbackQuery,
        view: &UserView,
        ctx: &mut Ctx,
    ) -> Result<Vec<Reply>, StoreError> {
        let answer = |text: Option<&str>| Reply::Answer {
            id: query.id.clone(),
            text: text.map(str::to_owned),
        };
        let Some(registration) = registration(&query.from) else {
            return Ok(vec![answer(None)]);
        };
        let callback = query.data.as_deref().and_then(Callback::decode);
        let message = query.message.as_ref().map(|m| (m.chat().id, m.id()));
        let (Some(callback), Some((chat, message))) = (callback, message) else {
            let language = view.user.as_ref().map_or(registration.language, |u| u.language);
            return Ok(vec![answer(Some(texts(language).stale_button))]);
        };
        let (user, _) = user_or_new(view, &registration);
        let target = Target::Message(chat, message);
        let (screen, note) = self.callback_screen(&user, &registration, callback, view, ctx).await?;
        let mut replies: Vec<Reply> = screen.map(|screen| target.show(screen)).into_iter().collect();
        replies.append(&mut ctx.also);
        replies.push(answer(note.as_deref()));
        Ok(replies)
    }

    /// The screen a button leads to, and a short note for the button's answer.
    async fn callback_screen(
        &self,
        user: &User,
        registration: &Registration,
        callback: Callback,
        view: &UserView,
        ctx: &mut Ctx,
    ) -> Result<(Option<Screen>, Option<String>), StoreError> {
        let language = user.language;
        let t = texts(language);
        let screen = match callback {
            Callback::Menu => screens::menu(language, &user.first_name),
            Callback::Balance => self.balance_screen(user, view).await?,
            Callback::Buy => screens::catalog(language, &self.catalog().await?),
            Callback::Tariff(id) => match self.tariff_screen(user, &id, view).await? {
                Some(screen) => screen,
                None => return Ok((None, Some(t.tariff_gone.to_owned()))),
            },
            Callback::Pay(id, provider) => return self.pay(user, registration, id, provider, view, ctx).await,
            Callback::PromoPrompt => {
                let mut items =
                    self.profile_items(view, registration, &[UserChange::Awaiting(Some(Awaiting::PromoCode))])?;
                items.extend(ctx.mark(self)?);
                self.store.write_all(items).await?;
                screens::with_menu(language, t.promo_prompt)
            }
            Callback::History(cursor) => {
                let after = cursor.and_then(|hex| format!("{}.{hex}", user.id).parse::<TxId>().ok());
                self.history_screen(user, after).await?
            }
            Callback::Subscription => self.subscription_screen(user, view).await?,
            Callback::AutoRenewAsk(on) => screens::confirm_auto_renew(language, on),
            Callback::AutoRenewSet(on) => {
                // Telegram renews Stars subscriptions itself: it is told
                // first, so a failure leaves our flag as it was.
                if !self
                    .edit_stars_subscription(user.id, view.subscription.as_ref(), on)
                    .await?
                {
                    ctx.marked = false;
                    let mark = ctx.mark(self)?;
                    self.store.write_all(mark).await?;
                    let title = self.subscription_title(view.subscription.as_ref()).await?;
                    return Ok((
                        Some(screens::subscription(
                            language,
                            view.subscription.as_ref(),
                            title.as_deref(),
                        )),
                        Some(t.something_wrong.to_owned()),
                    ));
                }
                let marks = ctx.mark(self)?;
                let (subscription, note) = match self.store.switch_auto_renew(user.id, on, marks).await? {
                    Some(sub) => (
                        Some(sub),
                        Some((if on { t.auto_renew_now_on } else { t.auto_renew_now_off }).to_owned()),
                    ),
                    // No subscription (any more): nothing to switch.
                    None => {
                        ctx.marked = false;
                        (None, None)
                    }
                };
                let title = self.subscription_title(subscription.as_ref()).await?;
                return Ok((
                    Some(screens::subscription(language, subscription.as_ref(), title.as_deref())),
                    note,
                ));
            }
            Callback::LanguageMenu => screens::language_menu(language),
            Callback::Language(chosen) => {
                let mut items = self.profile_items(view, registration, &[UserChange::Language(chosen)])?;
                items.extend(ctx.mark(self)?);
                self.store.write_all(items).await?;
                return Ok((
                    Some(screens::menu(chosen, &user.first_name)),
                    Some(texts(chosen).language_set.to_owned()),
                ));
            }
            Callback::Help => screens::help(language),
        };
        Ok((Some(screen), None))
    }

    async fn balance_screen(&self, user: &User, view: &UserView) -> Result<Screen, StoreError> {
        let title = self.subscription_title(view.subscription.as_ref()).await?;
        Ok(screens::balance(
            user.language,
            &view.balance,
            view.subscription.as_ref(),
            title.as_deref(),
        ))
    }

    async fn subscription_screen(&self, user: &User, view: &UserView) -> Result<Screen, StoreError> {
        let title = self.subscription_title(view.subscription.as_ref()).await?;
        Ok(screens::subscription(
            user.language,
            view.subscription.as_ref(),
            title.as_deref(),
        ))
    }

    async fn subscription_title(
        &self,
        subscription: Option<&tokenbill::domain::subscription::Subscription>,
    ) -> Result<Option<String>, StoreError> {
        let Some(subscription) = subscription else {
            return Ok(None);
        };
        Ok(self
            .catalog()
            .await?
            .into_iter()
            .find(|t| t.id == subscription.tariff_id)
            .map(|t| t.title.en))
    }

    async fn history_screen(&self, user: &User, after: Option<TxId>) -> Result<Screen, StoreError> {
        let page = self.store.ledger_page(user.id, after, HISTORY_PAGE).await?;
        let older = page.next.map(|tx| tx.sortable());
        Ok(screens::history(user.language, &page.entries, after.is_none(), older))
    }

    /// The user's pending code, if it applies to this purchase.
    fn applicable_promo(
        &self,
        user: &User,
        view: &UserView,
        tariff: &tokenbill::domain::tariff::Tariff,
    ) -> Option<PromoCode> {
        let promo = view.pending_promo.clone()?;
        self.store
            .evaluate_promo(user, Some(promo), 0, Some((tariff, Currency::Rub)))
            .ok()
    }

    /// The confirmation screen, priced from the catalog for every enabled
    /// provider, with the user's pending promo code when it applies.
    async fn tariff_screen(&self, user: &User, id: &TariffId, view: &UserView) -> Result<Option<Screen>, StoreError> {
        let Some(tariff) = self.catalog().await?.into_iter().find(|t| &t.id == id) else {
            return Ok(None);
        };
        let promo = self.applicable_promo(user, view, &tariff);
        let quotes: Vec<_> = self
            .config
            .providers
            .iter()
            // Stars renew only Telegram's 30-day subscriptions.
            .filter(|provider| **provider != Provider::TelegramStars || stars::sells(&tariff))
            .filter_map(|provider| {
                pricing::quote(&tariff, provider.currency(), promo.as_ref())
                    .ok()
                    .map(|q| (*provider, q))
            })
            .collect();
        let code = promo.as_ref().map(|p| p.code.as_str().to_owned());
        Ok(Some(screens::tariff(user.language, &tariff, &quotes, code.as_deref())))
    }

    /// Creates the invoice (priced from the stored tariff, read in this
    /// update's batch) and, in the same transaction, consumes the pending
    /// code and marks the update done.
    async fn pay(
        &self,
        user: &User,
        registration: &Registration,
        tariff_id: TariffId,
        provider: Provider,
        view: &UserView,
        ctx: &mut Ctx,
    ) -> Result<(Option<Screen>, Option<String>), StoreError> {
        let language = user.language;
        let t = texts(language);
        if !self.config.providers.contains(&provider) {
            return Ok((None, Some(t.provider_unavailable.to_owned())));
        }
        let tariff = view.tariff(&tariff_id)?;
        if provider == Provider::TelegramStars && tariff.as_ref().is_some_and(|tariff| !stars::sells(tariff)) {
            return Ok((None, Some(t.provider_unavailable.to_owned())));
        }
        let pending = view.pending_promo.clone();
        let order = NewInvoice {
            user: user.id,
            tariff_id,
            provider,
            promo: pending.as_ref().map(|p| p.code.clone()),
        };
        let promo = pending.map(|promo| (Some(promo), 0));
        let forget_code = || -> Result<Vec<TransactWriteItem>, StoreError> {
            Ok(if view.pending_promo.is_some() {
                vec![self.store.pending_promo_item(user.id, None)?]
            } else {
                Vec::new()
            })
        };
        let outcome = match self
            .store
            .draft_invoice(user, &order, tariff, promo, self.config.invoice_ttl)
        {
            Ok(draft) => {
                // A Stars subscription is sold only through an invoice link,
                // made before the invoice is stored: if Telegram cannot make
                // one, nothing is stored (and a retry of the update tries again).
                let link = match self.subscription_link(&draft.invoice, language).await? {
                    SubscriptionLink::Made(link) => Some(link),
                    SubscriptionLink::Refused => return Ok((None, Some(t.provider_unavailable.to_owned()))),
                    SubscriptionLink::NotNeeded => None,
                };
                // A newcomer buying without /start is registered with the invoice.
                let mut extra = self.profile_items(view, registration, &[])?;
                extra.extend(forget_code()?);
                extra.extend(ctx.mark(self)?);
                self.store
                    .commit_invoice(draft, extra)
                    .await
                    .map(|invoice| (invoice, link))
            }
            Err(err) => Err(err),
        };
        let (invoice, link) = match outcome {
            Ok(created) => created,
            Err(StoreError::Promo(rejection)) => {
                // The code no longer applies: forget it, say why.
                ctx.marked = false;
                let mut items = forget_code()?;
                items.extend(ctx.mark(self)?);
                self.store.write_all(items).await?;
                return Ok((
                    Some(screens::with_menu(language, promo_rejection(language, rejection))),
                    None,
                ));
            }
            Err(StoreError::NotFound { .. }) => return Ok((None, Some(t.tariff_gone.to_owned()))),
            Err(err) => return Err(err),
        };
        if invoice.status == InvoiceStatus::Paid {
            let tokens = invoice.tokens.get() + invoice.bonus_tokens.get();
            let text = t.free_purchase_done.replace("{tokens}", &tokens.to_string());
            return Ok((Some(screens::with_menu(language, text)), None));
        }
        let url = match payments::start(&invoice, &self.config.public_base_url)? {
            PaymentStart::Page(url) => Some(url),
            PaymentStart::Stars {
                subscription_period: Some(_),
                ..
            } => link,
            PaymentStart::Stars {
                payload,
                stars,
                subscription_period: None,
            } => {
                let (title, description) = stars_texts(&invoice, language);
                ctx.also.push(Reply::StarsInvoice {
                    chat: ChatId(user.id.get()),
                    title,
                    description,
                    payload,
                    stars,
                });
                None
            }
            PaymentStart::Nothing => None,
        };
        Ok((Some(screens::invoice(language, &invoice, url)), None))
    }

    /// For a Stars subscription's invoice, its invoice link
    /// (`createInvoiceLink` with `subscription_period`). A failure a retry
    /// may fix is an error, so the update is retried.
    async fn subscription_link(
        &self,
        invoice: &tokenbill::domain::invoice::Invoice,
        language: Language,
    ) -> Result<SubscriptionLink, StoreError> {
        let PaymentStart::Stars {
            payload,
            stars,
            subscription_period: Some(period),
        } = payments::start(invoice, &self.config.public_base_url)?
        else {
            return Ok(SubscriptionLink::NotNeeded);
        };
        let (title, description) = stars_texts(invoice, language);
        let mut request = CreateInvoiceLink::new(
            title,
            description,
            payload,
            stars::CURRENCY,
            [LabeledPrice::new("Tokens", stars)],
        );
        request.subscription_period = Some(Seconds::from_seconds(period));
        match JsonRequest::new(self.bot.clone(), request).await {
            Ok(link) => match url::Url::parse(&link) {
                Ok(link) => Ok(SubscriptionLink::Made(link)),
                Err(err) => {
                    tracing::error!(%link, error = %err, "createInvoiceLink answered something that is not a link");
                    Ok(SubscriptionLink::Refused)
                }
            },
            Err(err @ (RequestError::Network(_) | RequestError::Io(_) | RequestError::RetryAfter(_))) => {
                Err(StoreError::Unavailable {
                    operation: "createInvoiceLink",
                    message: err.to_string(),
                })
            }
            Err(err) => {
                tracing::error!(error = %err, invoice = %invoice.id, "createInvoiceLink refused");
                Ok(SubscriptionLink::Refused)
            }
        }
    }

    /// For a live Stars subscription whose auto-renewal changes, tells
    /// Telegram (`editUserStarSubscription`, named by the first charge id).
    /// False when Telegram refused; a failure a retry may fix is an error,
    /// so the update is retried. Nothing to tell: true.
    async fn edit_stars_subscription(
        &self,
        user: UserId,
        subscription: Option<&tokenbill::domain::subscription::Subscription>,
        on: bool,
    ) -> Result<bool, StoreError> {
        use tokenbill::domain::subscription::{RenewalMethod, SubscriptionStatus};
        let Some(sub) = subscription else {
            return Ok(true);
        };
        let Some(RenewalMethod::TelegramStars { charge_id, .. }) = &sub.renewal else {
            return Ok(true);
        };
        if sub.status == SubscriptionStatus::Expired || sub.auto_renew == on {
            return Ok(true);
        }
        let Ok(telegram_user) = u64::try_from(user.get()) else {
            return Ok(true);
        };
        let request = EditUserStarSubscription::new(
            teloxide_core::types::UserId(telegram_user),
            TelegramTransactionId(charge_id.clone()),
            !on,
        );
        match JsonRequest::new(self.bot.clone(), request).await {
            Ok(_) => Ok(true),
            Err(err @ (RequestError::Network(_) | RequestError::Io(_) | RequestError::RetryAfter(_))) => {
                Err(StoreError::Unavailable {
                    operation: "editUserStarSubscription",
                    message: err.to_string(),
                })
            }
            Err(err) => {
                tracing::error!(%user, charge = %charge_id, error = %err, "editUserStarSubscription refused");
                Ok(false)
            }
        }
    }

    /// Answers Telegram's last check before a Stars payment: the invoice
    /// must be pending, the payer's, and for exactly the amount due.
    fn on_pre_checkout(
        &self,
        query: teloxide_core::types::PreCheckoutQuery,
        view: &UserView,
    ) -> Result<Reply, StoreError> {
        let language = view.user.as_ref().map_or_else(
            || Language::from_telegram(query.from.language_code.as_deref()),
            |u| u.language,
        );
        let invoice = match stars::invoice_id(&query.invoice_payload) {
            Some(id) => view.invoice(&id)?,
            None => None,
        };
        let payer = registration(&query.from).map(|r| r.id);
        let verdict = match payer {
            Some(payer) => stars::check_pre_checkout(
                invoice.as_ref(),
                payer,
                &query.currency,
                query.total_amount,
                self.store.now(),
            ),
            None => Err(PreCheckoutRefusal::UnknownInvoice),
        };
        if let Err(refusal) = verdict {
            tracing::info!(payload = %query.invoice_payload, ?refusal, "pre-checkout refused");
        }
        Ok(Reply::PreCheckout {
            id: query.id,
            refusal: verdict.err().map(|refusal| refusal.message(language).to_owned()),
        })
    }

    /// Credits a Stars payment once, in one transaction with the update's
    /// done-mark; the user is told by the notifier.
    async fn on_successful_payment(
        &self,
        message: Message,
        view: &UserView,
        ctx: &mut Ctx,
    ) -> Result<Vec<Reply>, StoreError> {
        let Some(payment) = message.successful_payment() else {
            return Ok(Vec::new());
        };
        let proof = stars::proof(payment)?;
        let Some(invoice) = view.invoice(&proof.invoice_id)? else {
            // Money arrived for an invoice we do not know: keep the evidence.
            tracing::error!(payload = %payment.invoice_payload, charge = %payment.telegram_payment_charge_id.0,
                "Stars payment for an unknown invoice");
            return Ok(Vec::new());
        };
        // Telegram charged a later period of a subscription by itself: the
        // payload names the first invoice, so the renewal gets its own
        // (one per charge id), whose payment grants the period and extends
        // the subscription exactly once.
        let (invoice, proof) = if stars::is_renewal(payment) {
            self.store.stars_renewal_invoice(&invoice, &proof).await?
        } else {
            (invoice, proof)
        };
        let extra = if invoice.status == InvoiceStatus::Paid {
            Vec::new()
        } else {
            ctx.mark(self)?
        };
        match self.store.confirm_payment_of(invoice, &proof, extra).await {
            Ok(paid) => {
                if paid.replayed {
                    // Credited by another update: this one's done-mark was
                    // not written with it.
                    ctx.marked = false;
                }
                tracing::info!(invoice = %paid.invoice.id, replayed = paid.replayed, "Stars payment credited");
                if let Some(queue) = &self.queue {
                    queue.publish_or_log(&[NotificationId::payment(&paid.invoice.id)]).await;
                }
            }
            Err(StoreError::Domain(mismatch @ tokenbill::domain::DomainError::PaymentMismatch { .. })) => {
                ctx.marked = false;
                tracing::error!(error = %mismatch, charge = %payment.telegram_payment_charge_id.0,
                    "Stars payment does not match its invoice; not credited");
            }
            Err(err) => return Err(err),
        }
        Ok(Vec::new())
    }

    async fn on_membership(
        &self,
        member: ChatMemberUpdated,
        view: &UserView,
        ctx: &mut Ctx,
    ) -> Result<Vec<Reply>, StoreError> {
        if view.user.is_none() {
            return Ok(Vec::new()); // never met: nothing to record
        }
        let Some(registration) = registration(&member.from) else {
            return Ok(Vec::new());
        };
        let reachable = !member.new_chat_member.is_banned() && !member.new_chat_member.is_left();
        let mut items = vec![
            self.store
                .update_user_item(registration.id, &[UserChange::Reachable(reachable)])?,
        ];
        items.extend(ctx.mark(self)?);
        self.store.write_all(items).await?;
        Ok(Vec::new())
    }

    async fn stats(&self) -> Result<String, StoreError> {
        use tokenbill::domain::EntryKind::*;
        let today = self.store.now().date_naive();
        let stats = self.store.daily_stats(today).await?;
        let sold = stats.tokens_of(Purchase) + stats.tokens_of(Renewal);
        let spent = stats.tokens_of(Spend) + stats.tokens_of(Capture) - stats.tokens_of(Refund);
        Ok(format!(
            "<b>{today}</b>\nusers: {}\npaid invoices today: {}\ntokens sold today: {sold}\ntokens spent today: {spent}",
            stats.users_total, stats.paid_invoices
        ))
    }

    /// `/grant ID N reason`, keyed by the update so a redelivery grants once.
    async fn grant(&self, args: &str, view: &UserView, ctx: &mut Ctx) -> Result<String, StoreError> {
        let usage = "usage: /grant ID TOKENS reason";
        let mut parts = args.splitn(3, char::is_whitespace);
        let (Some(id), Some(amount), Some(reason)) = (parts.next(), parts.next(), parts.next()) else {
            return Ok(usage.into());
        };
        let (Ok(id), Some(tokens)) = (
            id.parse::<UserId>(),
            amount.parse::<u64>().ok().and_then(|n| Tokens::positive(n).ok()),
        ) else {
            return Ok(usage.into());
        };
        if view.other_user(id)?.is_none() {
            return Ok(format!("user {id} not found"));
        }
        let key = IdempotencyKey::new(format!("telegram-grant:{}", ctx.update_id))?;
        let mut request = BalanceRequest::credit(id, CreditKind::Grant, tokens, key).description(reason.trim());
        request.extra = ctx.mark(self)?;
        let applied = self.store.apply(request).await?;
        Ok(format!("granted {tokens} tokens to {id} ({})", applied.receipt.tx_id))
    }
}

/// What [`Webhook::subscription_link`] got.
enum SubscriptionLink {
    /// Not a Stars subscription: no link to make.
    NotNeeded,
    Made(url::Url),
    /// Telegram refused; retrying the same request would not help.
    Refused,
}

/// A Stars invoice's title (Telegram takes 1-32 characters) and description.
fn stars_texts(invoice: &tokenbill::domain::invoice::Invoice, language: Language) -> (String, String) {
    let tokens = invoice.tokens.get() + invoice.bonus_tokens.get();
    (
        invoice.title.get(language).chars().take(32).collect(),
        texts(language)
            .stars_invoice_description
            .replace("{tokens}", &tokens.to_string()),
    )
}

/// `/user ID` from the batch read: profile and balance.
fn describe_user(args: &str, view: &UserView) -> Result<String, StoreError> {
    let Ok(id) = args.trim().parse::<UserId>() else {
        return Ok("usage: /user ID".into());
    };
    let Some(user) = view.other_user(id)? else {
        return Ok(format!("user {id} not found"));
    };
    let balance = view.balance_of(id)?;
    Ok(format!(
        "<b>{}</b> @{} ({})\nlanguage {}, reachable {}, paid invoices {}\navailable {}, held {}",
        escape(&user.first_name),
        escape(user.username.as_deref().unwrap_or("-")),
        user.id,
        user.language.code(),
        user.reachable,
        user.paid_invoices,
        balance.available,
        balance.held
    ))
}
