//! Estimated LLM cost from token counts.

/// USD per million prompt and completion tokens; models not listed use the last row.
const MODEL_PRICES: &[(&str, f64, f64)] = &[
    ("gpt-4o-mini", 0.15, 0.6),
    ("gpt-4o", 2.5, 10.0),
    ("gpt-4-turbo", 10.0, 30.0),
    ("claude-3-opus", 15.0, 75.0),
    ("claude-3-sonnet", 3.0, 15.0),
    ("claude-3-haiku", 0.25, 1.25),
    ("", 1.0, 3.0),
];

pub fn estimated_cost_usd(model: Option<&str>, prompt_tokens: i64, completion_tokens: i64) -> f64 {
    let model = model.unwrap_or_default();
    let (_, prompt_rate, completion_rate) = MODEL_PRICES
        .iter()
        .find(|(name, _, _)| !name.is_empty() && model.starts_with(name))
        .or_else(|| MODEL_PRICES.last())
        .copied()
        .unwrap_or(("", 0.0, 0.0));
    (prompt_tokens as f64 * prompt_rate + completion_tokens as f64 * completion_rate) / 1_000_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_models_use_their_price_and_others_the_default() {
        assert!((estimated_cost_usd(Some("gpt-4o-mini"), 1_000_000, 0) - 0.15).abs() < 1e-9);
        assert!((estimated_cost_usd(Some("gpt-4o"), 0, 1_000_000) - 10.0).abs() < 1e-9);
        assert!((estimated_cost_usd(Some("my-model"), 1_000_000, 1_000_000) - 4.0).abs() < 1e-9);
        assert_eq!(estimated_cost_usd(None, 0, 0), 0.0);
    }
}
