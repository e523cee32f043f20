//! Stripe invoicing adapter (filled next).
