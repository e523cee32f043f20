"""localstripe, plus the Checkout Sessions and invoice finalization it lacks.

The portal's self-service purchase creates a Checkout Session (`POST /v1/checkout/sessions`,
subscription mode, one price and a quantity) and sends the buyer to its `url`. localstripe
has no Checkout, so the local stack adds the two calls portal-api makes with the checks
Stripe applies to them (an existing customer and price, a positive quantity, URLs, the
automatic-tax options), and a retrieve. The buyer-facing page itself is Stripe's and is not
emulated: the purchase then arrives as subscription webhooks, which the scenario makes
directly on localstripe.

Usage billing finalizes its invoices (`POST /v1/invoices/{id}/finalize`), which localstripe
lacks too: the added call turns a draft into an open invoice as Stripe does and gives it what
Stripe gives a finalized invoice and the customer's documents show: a `number` and a
`hosted_invoice_url` (the page where the customer pays; not served locally).

Usage billing creates its invoice first and then attaches each item to it (`POST /v1/invoices`
with `pending_invoice_items_behavior=exclude`, `currency`, `auto_advance`; `POST
/v1/invoiceitems` with `invoice`), so an invoice never sweeps up unrelated pending items.
localstripe always sweeps them and never adds an item created with `invoice` to that invoice's
lines; both are done here as Stripe does (an item for a non-draft invoice is refused).

Paying an invoice with a declining card (`POST /v1/invoices/{id}/pay`) fails as on Stripe: a
402 and an `invoice.payment_failed` webhook (localstripe drops the failure silently).

localstripe writes its whole state to disk on every change and lists objects by scanning all
of them, so each call costs time in proportion to everything created so far (a month of
10 000 customers' invoices would take hours). This launcher starts from scratch and never
reads that file, so it skips the writes, and it lists an object type from an index of that
type; what is stored and answered is unchanged.

Run instead of `localstripe`: `python infra/localstripe_checkout.py --port 8420 --from-scratch`.
"""

import itertools

from localstripe import server
from localstripe.errors import UserError
from localstripe import resources
from localstripe.resources import (
    Customer, Invoice, InvoiceItem, InvoiceLineItem, List, PaymentIntent, Plan, StripeObject)

# ---- speed: no state file, lists from a per-type index ----
_by_type = {}


def _store_set(self, key, value):
    dict.__setitem__(self, key, value)
    if ":" in key:
        _by_type.setdefault(key.split(":", 1)[0], {})[key] = value


def _store_del(self, key):
    dict.__delitem__(self, key)
    if ":" in key:
        _by_type.get(key.split(":", 1)[0], {}).pop(key, None)


def _list_all(cls, url, limit=None, starting_after=None, **kwargs):
    if kwargs:
        raise UserError(400, "Unexpected " + ", ".join(kwargs.keys()))
    li = List(url, limit=limit, starting_after=starting_after)
    li._list = list(_by_type.get(cls.object, {}).values())
    return li


resources.Store.__setitem__ = _store_set
resources.Store.__delitem__ = _store_del
resources.Store.dump_to_disk = lambda self: None
StripeObject._api_list_all = classmethod(_list_all)

ALLOWED = {
    "mode", "customer", "line_items", "success_url", "cancel_url", "metadata",
    "automatic_tax", "customer_update", "tax_id_collection", "subscription_data",
    "client_reference_id",
}


class CheckoutSession(StripeObject):
    object = "checkout.session"
    _id_prefix = "cs_test_"

    def __init__(self, **data):
        unknown = set(data) - ALLOWED
        if unknown:
            raise UserError(400, "Received unknown parameter: " + sorted(unknown)[0])
        try:
            assert data.get("mode") == "subscription"
            assert isinstance(data.get("customer"), str)
            items = data.get("line_items")
            assert isinstance(items, list) and len(items) == 1
            price = items[0].get("price")
            quantity = int(items[0].get("quantity", 1))
            assert isinstance(price, str) and quantity >= 1
            for url in ("success_url", "cancel_url"):
                assert str(data.get(url, "")).startswith("http")
            tax = (data.get("automatic_tax") or {}).get("enabled")
            assert tax in (None, "true", "false", True, False)
        except (AssertionError, TypeError, ValueError, AttributeError):
            raise UserError(400, "Bad request")
        Customer._api_retrieve(data["customer"])  # 404 if it does not exist
        Plan._api_retrieve(price)  # prices are plans on localstripe
        super().__init__()
        self.mode = "subscription"
        self.status = "open"
        self.payment_status = "unpaid"
        self.customer = data["customer"]
        self.success_url = data["success_url"]
        self.cancel_url = data["cancel_url"]
        self.metadata = data.get("metadata") or {}
        self.automatic_tax = {"enabled": tax in ("true", True), "status": None}
        self.line_items_summary = {"price": price, "quantity": quantity}
        self.subscription = None
        self.expires_at = self.created + 24 * 3600
        self.url = "https://checkout.stripe.local/c/pay/" + self.id


_invoice_numbers = itertools.count(1)


def finalize_invoice(id, **params):
    """Draft -> open (or paid when nothing is due), with a number and a pay page, like Stripe.
    A non-draft is refused as Stripe refuses it (400)."""
    unknown = set(params) - {"auto_advance"}
    if unknown:
        raise UserError(400, "Received unknown parameter: " + sorted(unknown)[0])
    invoice = Invoice._api_retrieve(id)
    if invoice.status != "draft":
        raise UserError(
            400, "This invoice is already finalized, you can't re-finalize a non-draft invoice.")
    invoice._finalize()
    invoice.number = "LOCAL-%04d" % next(_invoice_numbers)
    invoice.hosted_invoice_url = "https://invoice.stripe.local/i/" + invoice.id
    return invoice


_create_invoice = Invoice._api_create


class _NoItems:
    _list = ()


def _no_items(*_args, **_kwargs):
    return _NoItems()


def create_invoice(pending_invoice_items_behavior=None, currency=None, auto_advance=None,
                   **params):
    """`POST /v1/invoices`. `exclude`: an empty draft in `currency`, the customer's pending
    items left pending (localstripe would sweep them into it and refuse an empty invoice)."""
    if pending_invoice_items_behavior not in (None, "include", "exclude"):
        raise UserError(400, "Invalid pending_invoice_items_behavior")
    if auto_advance not in (None, "true", "false", True, False):
        raise UserError(400, "Invalid auto_advance")
    if pending_invoice_items_behavior != "exclude":
        return _create_invoice(pending_invoice_items_behavior=pending_invoice_items_behavior,
                               **params)
    unknown = set(params) - {"customer", "description", "metadata"}
    if unknown:
        raise UserError(400, "Received unknown parameter: " + sorted(unknown)[0])
    if not isinstance(currency, str) or len(currency) != 3:
        raise UserError(400, "Missing required param: currency.")
    customer = params.get("customer")
    if not isinstance(customer, str) or not customer.startswith("cus_"):
        raise UserError(400, "Bad request")
    # The constructor sweeps the customer's pending items (a scan of every item in the store):
    # it sees none while it runs.
    swept = InvoiceItem._api_list_all
    InvoiceItem._api_list_all = _no_items
    try:
        invoice = Invoice(**params)
    finally:
        InvoiceItem._api_list_all = swept
    invoice.currency = currency.lower()
    invoice.auto_advance = auto_advance not in ("false", False)
    return invoice


_new_item = InvoiceItem.__init__


def new_item_on_invoice(self, invoice=None, **params):
    """An item created with `invoice` becomes a line of that (draft) invoice, as on Stripe."""
    target = None
    if invoice is not None:
        target = Invoice._api_retrieve(invoice) if isinstance(invoice, str) else None
        if target is not None and target.status != "draft":
            raise UserError(400, "You cannot add invoice items to an invoice that is not a draft.")
    _new_item(self, invoice=invoice, **params)
    if target is not None:
        if target.currency != self.currency and target.lines._list:
            raise UserError(400, "The invoice item's currency must match the invoice's.")
        target.currency = self.currency
        target.lines._list.append(InvoiceLineItem(self))


Invoice._api_create = create_invoice
InvoiceItem.__init__ = new_item_on_invoice

_confirm = PaymentIntent._confirm


def _confirm_reporting_invoice_failures(self, on_failure_now):
    """Paying an invoice (`POST /v1/invoices/{id}/pay`) with a card that declines: Stripe
    answers 402 `card_declined` and sends `invoice.payment_failed` (the subscription goes
    `past_due`); localstripe drops the failure silently. Report it as Stripe does."""
    if self.invoice:
        on_failure_now = self._report_failure
    return _confirm(self, on_failure_now)


PaymentIntent._confirm = _confirm_reporting_invoice_failures

server.app.router.add_route(
    "POST", "/v1/invoices/{id}/finalize",
    server.api_extra(finalize_invoice, "/v1/invoices/{id}/finalize"))
server.app.router.add_route(
    "POST", "/v1/checkout/sessions", server.api_create(CheckoutSession, "/v1/checkout/sessions"))
server.app.router.add_route(
    "GET", "/v1/checkout/sessions/{id}",
    server.api_retrieve(CheckoutSession, "/v1/checkout/sessions/{id}"))

if __name__ == "__main__":
    server.start()
