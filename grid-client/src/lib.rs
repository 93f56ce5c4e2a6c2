//! grid client
