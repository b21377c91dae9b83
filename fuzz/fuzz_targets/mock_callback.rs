//! The mock provider's signed callbacks and charge requests, as the payment
//! webhook checks them. Half the inputs are a raw `mock-signature` header
//! and body (forgeries: never accepted); the other half are bodies this
//! target signs with the real secret at a chosen time, so the parser and
//! the replay window behind the signature check are reached too.

#![no_main]

use chrono::{DateTime, Duration, Utc};
use libfuzzer_sys::fuzz_target;
use tokenbill::payments::mock::{MockError, MockProvider, REPLAY_WINDOW};

const SECRET: &str = "fuzz-mock-provider-secret";

fuzz_target!(|data: &[u8]| {
    let provider = MockProvider::new(SECRET).expect("a long enough secret");
    let now = DateTime::from_timestamp(1_800_000_000, 0).expect("a valid time");
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        // `header \n body`: whatever a caller without the secret can send.
        let split = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
        let (header, body) = (&rest[..split], rest.get(split + 1..).unwrap_or_default());
        let header = std::str::from_utf8(header).ok();
        assert!(
            provider.verify(header, body, now).is_err(),
            "a forged callback verified"
        );
        assert!(
            provider.verify_charge(header, body, now).is_err(),
            "a forged charge verified"
        );
        return;
    }
    // `8 bytes of clock skew in seconds, then the body`, signed genuinely.
    let Some((skew, body)) = rest.split_first_chunk::<8>() else {
        return;
    };
    let skew = i64::from_le_bytes(*skew) % (400 * 24 * 3600);
    let sent: DateTime<Utc> = now + Duration::seconds(skew);
    let header = provider.sign(body, sent);
    let fresh = (now - sent).abs() <= REPLAY_WINDOW;
    match provider.verify(Some(&header), body, now) {
        Ok(event) => {
            assert!(fresh);
            // What a verified event claims round-trips through the provider.
            let (signature, again) = provider.callback(&event, now);
            assert_eq!(provider.verify(Some(&signature), &again, now), Ok(event.clone()));
            if let Ok(proof) = event.proof() {
                assert_eq!(proof.invoice_id, event.invoice_id);
                assert_eq!(proof.amount.amount(), event.amount);
            }
        }
        Err(MockError::Stale) => assert!(!fresh),
        Err(MockError::Malformed { .. }) => assert!(fresh),
        Err(other) => panic!("a genuinely signed body was refused as {other:?}"),
    }
    match provider.verify_charge(Some(&header), body, now) {
        Ok(_) | Err(MockError::Malformed { .. }) => assert!(fresh),
        Err(MockError::Stale) => assert!(!fresh),
        Err(other) => panic!("a genuinely signed charge was refused as {other:?}"),
    }
    // A signature for another body never carries over.
    let mut tampered = body.to_vec();
    tampered.push(b' ');
    assert_eq!(
        provider.verify(Some(&header), &tampered, now),
        Err(MockError::BadSignature)
    );
});
