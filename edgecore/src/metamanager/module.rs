//! The MetaManager module (being built).
