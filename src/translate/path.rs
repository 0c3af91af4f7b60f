//! Field paths for error messages (`messages[3].tool_calls[0].function`), built as the
//! translators descend and rendered only when an error names one: the request path allocates
//! no path strings.

use std::fmt;

/// Where a value sits in the request (`messages[3].tool_calls[0].function`), rendered only when
/// an error names it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct At<'a> {
    parent: Option<&'a At<'a>>,
    segment: Segment<'a>,
}

#[derive(Debug, Clone, Copy)]
enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

impl<'a> At<'a> {
    /// `messages[i]`.
    pub fn message(i: usize) -> At<'static> {
        At {
            parent: Some(&MESSAGES),
            segment: Segment::Index(i),
        }
    }

    pub fn key(&'a self, key: &'a str) -> At<'a> {
        At {
            parent: Some(self),
            segment: Segment::Key(key),
        }
    }

    pub fn index(&'a self, i: usize) -> At<'a> {
        At {
            parent: Some(self),
            segment: Segment::Index(i),
        }
    }
}

static MESSAGES: At<'static> = At {
    parent: None,
    segment: Segment::Key("messages"),
};

impl fmt::Display for At<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(parent) = self.parent {
            parent.fmt(f)?;
        }
        match self.segment {
            Segment::Key(k) if self.parent.is_some() => write!(f, ".{k}"),
            Segment::Key(k) => f.write_str(k),
            Segment::Index(i) => write!(f, "[{i}]"),
        }
    }
}

impl From<At<'_>> for String {
    fn from(at: At<'_>) -> String {
        at.to_string()
    }
}
