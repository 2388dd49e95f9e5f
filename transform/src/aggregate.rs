//! The aggregate functions: what each keeps for one group in one pane, how the panes of a window combine,
//! and the value written for the window.
//!
//! Numbers stay exact integers (SQL `BIGINT`) while every value is a JSON integer and the result fits in
//! 64 bits; anything else is a 64-bit float. Integer parts are summed exactly (128 bits) and rounded once;
//! float parts are added in pane order, each pane in arrival order.

use std::cmp::Ordering;
use std::fmt;

use crate::engine::{GroupText, GroupValue};
use crate::time::is_integer_token;

/// An aggregate function of `AGGREGATES`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    /// `count`: every counted event (SQL `COUNT(1)`).
    Count,
    /// `count(FIELD)`: events whose field is present and not null.
    CountField,
    Sum,
    Min,
    Max,
    Avg,
    /// `count_distinct(FIELD)`: the distinct present, non-null values (SQL `COUNT(DISTINCT FIELD)`).
    CountDistinct,
    /// `percentile(FIELD, q)` and `median(FIELD)`: the value at quantile `q`, within 1 % (`crate::sketch`).
    Percentile(Quantile),
    /// `approx_count_distinct(FIELD)`: `count_distinct` estimated in bounded room (`crate::hll`).
    ApproxCountDistinct,
}

/// A quantile from 0 to 1, in millionths (so a function stays comparable and hashable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantile(pub u32);

impl Quantile {
    pub const MEDIAN: Quantile = Quantile(500_000);

    /// Reads `0.95`, `1`, `0`: at most six decimals.
    pub fn parse(text: &str) -> Option<Quantile> {
        let q: f64 = text.trim().parse().ok()?;
        let millionths = (q * 1e6).round();
        ((0.0..=1.0).contains(&q) && (millionths / 1e6 - q).abs() < 1e-12).then_some(Quantile(millionths as u32))
    }

    pub fn value(self) -> f64 {
        f64::from(self.0) / 1e6
    }
}

impl fmt::Display for Quantile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.value())
    }
}

impl Function {
    /// The functions that read a field, by name.
    pub const OF_A_FIELD: [(&'static str, Function); 7] = [
        ("count", Function::CountField),
        ("count_distinct", Function::CountDistinct),
        ("approx_count_distinct", Function::ApproxCountDistinct),
        ("sum", Function::Sum),
        ("min", Function::Min),
        ("max", Function::Max),
        ("avg", Function::Avg),
    ];

    pub fn name(self) -> &'static str {
        match self {
            Function::Count | Function::CountField => "count",
            Function::Sum => "sum",
            Function::Min => "min",
            Function::Max => "max",
            Function::Avg => "avg",
            Function::CountDistinct => "count_distinct",
            Function::Percentile(_) => "percentile",
            Function::ApproxCountDistinct => "approx_count_distinct",
        }
    }

    /// Whether the function keeps state of its own (`count` uses the group's event count).
    pub fn reads_a_field(self) -> bool {
        self != Function::Count
    }
}

/// What one event gives one aggregate that reads a field; `None` (absent or null) is skipped by all.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Input<'a> {
    /// For `count(FIELD)` (any value counts as 1), `sum`, `min`, `max`, `avg`, and `count_distinct` of numbers.
    Number(Number),
    /// For `count_distinct`: a string, unescaped, counted by its text.
    Text(&'a str),
}

impl Input<'_> {
    /// The number, for the aggregates that add numbers.
    pub fn number(self) -> Option<Number> {
        match self {
            Input::Number(number) => Some(number),
            Input::Text(_) => None,
        }
    }

    /// Writes the value with a type tag (text `s`, or `e` when JSON escapes some of it; `i` integer, `f`
    /// float): values of different types never meet (`"1"` and `1` are two values), and neither do an integer
    /// and the equal float (`1`, `1.0`), as JSON writes them apart. Text and integers are written as group
    /// values are ([`GroupText`]), so a value that is both is stored once.
    pub fn write_tagged(self, out: &mut String) {
        match self {
            Input::Text(text) => GroupText::write(&GroupValue::Text(text), out),
            Input::Number(Number::Int(int)) => GroupText::write(&GroupValue::Int(int), out),
            Input::Number(float) => {
                out.clear();
                out.push('f');
                crate::json::write_number(out, float);
            }
        }
    }
}

/// A number read from an event, or an aggregate's result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    Int(i64),
    Float(f64),
}

impl Number {
    /// Reads a JSON number token: a whole number that fits in 64 bits is an integer, anything else the
    /// nearest 64-bit float. `None` when the number is beyond the largest float (`1e400`).
    pub fn parse(token: &str) -> Option<Number> {
        if is_integer_token(token) {
            if let Ok(int) = token.parse::<i64>() {
                return Some(Number::Int(int));
            }
        }
        let float = token.parse::<f64>().ok()?;
        float.is_finite().then_some(Number::Float(float))
    }

    /// Orders by value; an integer and a float of equal value compare equal.
    pub(crate) fn cmp_value(self, other: Number) -> Ordering {
        match (self, other) {
            (Number::Int(a), Number::Int(b)) => a.cmp(&b),
            (Number::Float(a), Number::Float(b)) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
            (Number::Int(a), Number::Float(b)) => cmp_int_float(a, b),
            (Number::Float(a), Number::Int(b)) => cmp_int_float(b, a).reverse(),
        }
    }

    /// Whether `self` should replace `best` as the minimum (`Less`) or maximum (`Greater`). Ties go to the
    /// integer, and between `-0.0` and `0.0` to the one in the direction sought, so the result never depends
    /// on the order the values arrived in.
    fn beats(self, best: Number, direction: Ordering) -> bool {
        match self.cmp_value(best) {
            Ordering::Equal => match (self, best) {
                (Number::Int(_), Number::Float(_)) => true,
                (Number::Float(a), Number::Float(b)) => a.total_cmp(&b) == direction,
                _ => false,
            },
            order => order == direction,
        }
    }
}

impl fmt::Display for Number {
    /// As a row writes it ([`crate::json::write_number`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = String::new();
        crate::json::write_number(&mut text, *self);
        f.pad(&text)
    }
}

/// Compares an integer with a float exactly (no rounding of either).
fn cmp_int_float(int: i64, float: f64) -> Ordering {
    const TWO_TO_63: f64 = 9_223_372_036_854_775_808.0;
    if float >= TWO_TO_63 {
        return Ordering::Less;
    }
    if float < -TWO_TO_63 {
        return Ordering::Greater;
    }
    let whole = float.trunc();
    // `whole` is within i64's range here, so the cast is exact.
    int.cmp(&(whole as i64)).then_with(|| whole.partial_cmp(&float).unwrap_or(Ordering::Equal))
}

/// The set id of a `count_distinct` accumulator that has no value yet.
pub const NO_SET: u32 = u32::MAX;

/// A 128-bit integer kept as two words, so the accumulator needs no 16-byte alignment in the module.
#[derive(Debug, Clone, Copy, Default)]
pub struct Wide {
    low: u64,
    high: i64,
}

impl Wide {
    fn get(self) -> i128 {
        (i128::from(self.high) << 64) | i128::from(self.low)
    }

    fn set(&mut self, value: i128) {
        self.low = value as u64;
        self.high = (value >> 64) as i64;
    }
}

/// The state of one aggregate that reads a field, for one group in one pane or window.
#[derive(Debug, Clone, Copy)]
pub enum Accumulator {
    /// `count_distinct`: the pane's set of values, kept by the engine (`crate::distinct`); `NO_SET` before
    /// the first value. Panes combine there, not here.
    Distinct(u32),
    /// `percentile`: the pane's sketch, kept by the engine (`crate::sketch`); `NO_SET` before the first value.
    Sketch(u32),
    /// `approx_count_distinct`: the pane's HyperLogLog, kept by the engine (`crate::hll`); `NO_SET` before the
    /// first value.
    Hll(u32),
    /// `count(FIELD)`: the non-null values.
    Values(u64),
    /// `sum` and `avg`: the non-null values, the exact sum of the integers, the sum of the floats (from
    /// `-0.0`, the identity of float addition, so a sum of `-0.0` alone stays `-0.0` as in Flink).
    Sum {
        values: u64,
        ints: Wide,
        floats: f64,
        any_int: bool,
        any_float: bool,
    },
    Min(Option<Number>),
    Max(Option<Number>),
}

impl Accumulator {
    /// The state before any value; `None` for `count`, which keeps none.
    pub fn empty(function: Function) -> Option<Accumulator> {
        Some(match function {
            Function::Count => return None,
            Function::CountField => Accumulator::Values(0),
            Function::Sum | Function::Avg => {
                Accumulator::Sum { values: 0, ints: Wide::default(), floats: -0.0, any_int: false, any_float: false }
            }
            Function::Min => Accumulator::Min(None),
            Function::Max => Accumulator::Max(None),
            Function::CountDistinct => Accumulator::Distinct(NO_SET),
            Function::Percentile(_) => Accumulator::Sketch(NO_SET),
            Function::ApproxCountDistinct => Accumulator::Hll(NO_SET),
        })
    }

    /// Adds one event's value of the field (`None`: absent or null, which every function skips).
    pub fn add(&mut self, value: Option<Number>) {
        let Some(value) = value else { return };
        match self {
            Accumulator::Values(count) => *count += 1,
            Accumulator::Sum { values, ints, floats, any_int, any_float } => {
                *values += 1;
                match value {
                    Number::Int(int) => {
                        ints.set(ints.get() + i128::from(int));
                        *any_int = true;
                    }
                    Number::Float(float) => {
                        *floats += float;
                        *any_float = true;
                    }
                }
            }
            Accumulator::Min(best) => keep_best(best, value, Ordering::Less),
            Accumulator::Max(best) => keep_best(best, value, Ordering::Greater),
            // Added by the engine, which holds the sets (`crate::distinct`).
            Accumulator::Distinct(_) | Accumulator::Sketch(_) | Accumulator::Hll(_) => {
                debug_assert!(false, "added by the engine")
            }
        }
    }

    /// Adds the state of a later pane of the same window.
    pub fn merge(&mut self, other: &Accumulator) {
        match (self, other) {
            (Accumulator::Values(count), Accumulator::Values(more)) => *count += more,
            (
                Accumulator::Sum { values, ints, floats, any_int, any_float },
                Accumulator::Sum {
                    values: more,
                    ints: more_ints,
                    floats: more_floats,
                    any_int: more_any_int,
                    any_float: more_any_float,
                },
            ) => {
                *values += more;
                ints.set(ints.get() + more_ints.get());
                *floats += more_floats;
                *any_int |= more_any_int;
                *any_float |= more_any_float;
            }
            (Accumulator::Min(best), Accumulator::Min(Some(value))) => keep_best(best, *value, Ordering::Less),
            (Accumulator::Max(best), Accumulator::Max(Some(value))) => keep_best(best, *value, Ordering::Greater),
            _ => {}
        }
    }

    /// The aggregate's value; `None` (JSON null) when no value was seen, or when a float result overflows.
    pub fn result(&self, function: Function) -> Option<Number> {
        match *self {
            Accumulator::Values(count) => Some(Number::Int(i64::try_from(count).unwrap_or(i64::MAX))),
            Accumulator::Sum { values: 0, .. } => None,
            Accumulator::Sum { values, ints, floats, any_int, any_float } => {
                let exact = ints.get();
                let sum = match i64::try_from(exact) {
                    Ok(int) if !any_float && function == Function::Sum => return Some(Number::Int(int)),
                    _ if !any_int => floats,
                    // The same rounding to nearest either way; from 64 bits the hardware converts.
                    Ok(int) => int as f64 + floats,
                    Err(_) => exact as f64 + floats,
                };
                let result = if function == Function::Avg { sum / values as f64 } else { sum };
                result.is_finite().then_some(Number::Float(result))
            }
            Accumulator::Min(best) | Accumulator::Max(best) => best,
            Accumulator::Distinct(_) | Accumulator::Sketch(_) | Accumulator::Hll(_) => {
                debug_assert!(false, "combined by the engine");
                None
            }
        }
    }
}

fn keep_best(best: &mut Option<Number>, value: Number, direction: Ordering) {
    if best.is_none_or(|current| value.beats(current, direction)) {
        *best = Some(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fold(function: Function, values: &[Option<Number>]) -> Option<Number> {
        let mut acc = Accumulator::empty(function).unwrap();
        values.iter().for_each(|value| acc.add(*value));
        acc.result(function)
    }

    use Number::{Float, Int};

    #[test]
    fn reads_integers_exactly_and_everything_else_as_floats() {
        assert_eq!(Number::parse("42"), Some(Int(42)));
        assert_eq!(Number::parse("-0"), Some(Int(0)));
        assert_eq!(Number::parse("9223372036854775807"), Some(Int(i64::MAX)));
        assert_eq!(Number::parse("9223372036854775808"), Some(Float(9_223_372_036_854_775_808.0)));
        assert_eq!(Number::parse("42.0"), Some(Float(42.0)));
        assert_eq!(Number::parse("1e3"), Some(Float(1000.0)));
        assert_eq!(Number::parse("-0.0"), Some(Float(-0.0)));
        assert_eq!(Number::parse("1e400"), None);
        assert_eq!(Number::parse("1e-400"), Some(Float(0.0)));
    }

    #[test]
    fn sums_stay_integers_while_they_fit() {
        assert_eq!(fold(Function::Sum, &[Some(Int(2)), None, Some(Int(-5))]), Some(Int(-3)));
        assert_eq!(fold(Function::Sum, &[Some(Int(i64::MAX)), Some(Int(1)), Some(Int(-1))]), Some(Int(i64::MAX)));
        assert_eq!(
            fold(Function::Sum, &[Some(Int(i64::MAX)), Some(Int(i64::MAX))]),
            Some(Float(1.8446744073709552e19))
        );
        assert_eq!(fold(Function::Sum, &[Some(Int(2)), Some(Float(0.5))]), Some(Float(2.5)));
        assert_eq!(fold(Function::Sum, &[None, None]), None);
        assert_eq!(fold(Function::Sum, &[Some(Float(1e308)), Some(Float(1e308))]), None, "overflow writes null");
    }

    #[test]
    fn averages_are_floats_of_the_non_null_values() {
        assert_eq!(fold(Function::Avg, &[Some(Int(1)), Some(Int(2)), None]), Some(Float(1.5)));
        assert_eq!(fold(Function::Avg, &[Some(Int(99))]), Some(Float(99.0)));
        assert_eq!(fold(Function::Avg, &[None]), None);
        assert_eq!(fold(Function::CountField, &[None, Some(Int(0)), Some(Float(0.5))]), Some(Int(2)));
        assert_eq!(fold(Function::CountField, &[None]), Some(Int(0)));
    }

    #[test]
    fn min_and_max_compare_integers_and_floats_exactly_whatever_the_order() {
        let values = [Some(Int(3)), Some(Float(2.5)), Some(Int(i64::MAX)), Some(Float(9.3e18)), None];
        assert_eq!(fold(Function::Min, &values), Some(Float(2.5)));
        assert_eq!(fold(Function::Max, &values), Some(Float(9.3e18)));
        assert_eq!(
            fold(Function::Max, &[Some(Int(i64::MAX)), Some(Float(9_223_372_036_854_775_807.0))]),
            Some(Float(9.223372036854776e18))
        );
        for order in [[Some(Int(3)), Some(Float(3.0))], [Some(Float(3.0)), Some(Int(3))]] {
            assert_eq!(fold(Function::Min, &order), Some(Int(3)));
            assert_eq!(fold(Function::Max, &order), Some(Int(3)));
        }
        for order in [[Some(Float(0.0)), Some(Float(-0.0))], [Some(Float(-0.0)), Some(Float(0.0))]] {
            assert_eq!(fold(Function::Min, &order).map(|n| n.to_string()), Some("-0.0".to_string()));
            assert_eq!(fold(Function::Max, &order).map(|n| n.to_string()), Some("0.0".to_string()));
        }
        assert_eq!(fold(Function::Min, &[None]), None);
    }

    #[test]
    fn merging_panes_equals_adding_their_values() {
        let mut window = Accumulator::empty(Function::Sum).unwrap();
        for pane in [[Some(Int(1)), Some(Float(0.25))], [Some(Int(i64::MAX)), None]] {
            let mut acc = Accumulator::empty(Function::Sum).unwrap();
            pane.iter().for_each(|value| acc.add(*value));
            window.merge(&acc);
        }
        assert_eq!(window.result(Function::Sum), Some(Float(9.223372036854776e18)));
        assert_eq!(window.result(Function::Avg), Some(Float(9.223372036854776e18 / 3.0)));
    }

    /// The engine copies a row's first pane instead of merging it into the empty state: the two must agree,
    /// down to the sign of a zero and the flags of a sum.
    #[test]
    fn merging_a_pane_into_the_empty_state_gives_the_pane() {
        let panes: [&[Option<Number>]; 6] = [
            &[],
            &[None],
            &[Some(Float(-0.0))],
            &[Some(Float(0.0)), Some(Float(-0.0))],
            &[Some(Int(3)), Some(Float(2.5)), None],
            &[Some(Int(i64::MAX)), Some(Int(i64::MAX)), Some(Float(1e-310))],
        ];
        let functions = [Function::CountField, Function::Sum, Function::Avg, Function::Min, Function::Max];
        for function in functions {
            for pane in panes {
                let mut state = Accumulator::empty(function).unwrap();
                pane.iter().for_each(|value| state.add(*value));
                let mut merged = Accumulator::empty(function).unwrap();
                merged.merge(&state);
                assert_eq!(format!("{merged:?}"), format!("{state:?}"), "{function:?} of {pane:?}");
            }
        }
    }

    /// Regression (sum_of_negative_zero_printed_0_0): a sum of `-0.0` alone printed `0.0`; Flink prints `-0.0`.
    #[test]
    fn a_sum_of_negative_zeros_is_negative_zero() {
        let negative_zero = Some(Float(-0.0));
        for function in [Function::Sum, Function::Avg] {
            let result = fold(function, &[negative_zero, None, negative_zero]);
            assert_eq!(result.map(|n| n.to_string()), Some("-0.0".to_string()), "{function:?}");
            let mut window = Accumulator::empty(function).unwrap();
            for pane in [[negative_zero], [None], [negative_zero]] {
                let mut acc = Accumulator::empty(function).unwrap();
                pane.iter().for_each(|value| acc.add(*value));
                window.merge(&acc);
            }
            assert_eq!(window.result(function).map(|n| n.to_string()), Some("-0.0".to_string()), "{function:?}");
        }
        // With a zero among them the sum is 0.0, as in IEEE addition.
        assert_eq!(fold(Function::Sum, &[negative_zero, Some(Float(0.0))]).map(|n| n.to_string()), Some("0.0".into()));
        assert_eq!(fold(Function::Sum, &[negative_zero, Some(Int(0))]).map(|n| n.to_string()), Some("0.0".into()));
    }

    /// The average's sum is the exact integer sum rounded once, so it is the `sum` column divided by the count;
    /// `AVG(CAST(x AS DOUBLE))` would round after every addition (2^53 + 1 + 1 stays 2^53 there).
    #[test]
    fn averages_of_large_integers_divide_the_exact_sum() {
        let two_to_53 = 9_007_199_254_740_992;
        let values = [Some(Int(two_to_53)), Some(Int(1)), Some(Int(1))];
        assert_eq!(fold(Function::Sum, &values), Some(Int(two_to_53 + 2)));
        assert_eq!(fold(Function::Avg, &values), Some(Float((two_to_53 + 2) as f64 / 3.0)));
        assert_eq!(fold(Function::Avg, &values).unwrap().to_string(), "3002399751580331.5");
        let double_sum = values.iter().fold(0.0, |sum, value| match value {
            Some(Int(int)) => sum + *int as f64,
            _ => sum,
        });
        assert_eq!((double_sum / 3.0).to_string(), "3002399751580330.5", "what AVG(CAST(x AS DOUBLE)) gives");
    }

    #[test]
    fn floats_print_so_they_read_back_as_the_same_float() {
        for (float, text) in [(99.0, "99.0"), (0.1, "0.1"), (1e16, "1e16"), (72.33333333333333, "72.33333333333333")] {
            assert_eq!(Float(float).to_string(), text);
            assert_eq!(text.parse::<f64>(), Ok(float));
        }
        assert_eq!(Int(-7).to_string(), "-7");
    }
}
