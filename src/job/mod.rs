//! Job files: the typed model, identifier checks, streaming CSV/JSONL readers, validation and
//! writing rows back out. No logic lives here; see the submodules.

pub(crate) mod columns;
pub(crate) mod csv_rows;
pub mod diagnostic;
pub(crate) mod duplicates;
pub mod ids;
pub(crate) mod intake;
pub(crate) mod jsonl_rows;
pub mod model;
pub mod parse;
pub mod reader;
pub mod source;
pub mod validate;
pub mod write;

pub use diagnostic::{Diagnostic, Diagnostics, Severity};
pub use ids::{Eid, Iccid, IdStrictness};
pub use model::{Action, JobRow, Operation, ProviderKind, Target, TargetKind};
pub use parse::ParseOptions;
pub use reader::{JobReader, RowResult};
pub use source::JobFormat;
pub use validate::{validate_file, FileValidation};
