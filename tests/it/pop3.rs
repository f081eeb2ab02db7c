//! POP3 receiver on the real stack (tests arrive with the POP3 client).
