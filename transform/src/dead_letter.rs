//! Why a record goes to the dead-letter topic ([`Reason`]), and the headers a dead letter carries.

/// Headers added to a dead-lettered record.
pub const REASON_HEADER: &str = "dead-letter-reason";
pub const DETAIL_HEADER: &str = "dead-letter-detail";
/// On a dead letter written without its value: the value's size in bytes.
pub const OMITTED_VALUE_HEADER: &str = "dead-letter-omitted-value-bytes";

macro_rules! reasons {
    ($($variant:ident => $name:literal,)*) => {
        /// Why a record went to the dead-letter topic; `name()` is the value of the reason header.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Reason { $($variant,)* }

        impl Reason {
            pub const ALL: &'static [Reason] = &[$(Reason::$variant,)*];

            pub fn name(self) -> &'static str {
                match self { $(Reason::$variant => $name,)* }
            }

        }
    };
}

reasons! {
    NoValue => "no_value",
    InvalidUtf8 => "invalid_utf8",
    NotJson => "not_json",
    NotObject => "not_object",
    TooDeep => "too_deep",
    MissingField => "missing_field",
    WrongType => "wrong_type",
    FieldTooLong => "field_too_long",
    BadTimestamp => "bad_timestamp",
    Future => "future",
    Late => "late",
    OverCapacity => "over_capacity",
    OutOfRange => "out_of_range",
}
