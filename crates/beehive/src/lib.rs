//! beehive
