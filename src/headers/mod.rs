//! Header rules: what awning checks and sets on requests, and what it strips
//! from and adds to responses.

pub mod request;
pub mod response;
pub mod security;
pub mod values;
