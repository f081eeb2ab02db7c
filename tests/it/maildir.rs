//! Maildir receiver on the real stack (tests arrive with the Maildir receiver).
