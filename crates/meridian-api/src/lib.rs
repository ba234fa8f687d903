//! meridian-api
