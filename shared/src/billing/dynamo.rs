//! DynamoDB adapters of the billing ports (filled next).
