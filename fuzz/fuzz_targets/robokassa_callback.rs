//! Robokassa's ResultURL / SuccessURL / FailURL parameters, as the payment
//! webhook parses them: any form string parses or is refused with an error
//! (never a panic); a guessed signature never verifies; the same callback
//! signed as Robokassa documents (`OutSum:InvId:Password[:Shp_k=v...]`)
//! verifies with its own password only.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tokenbill::payments::robokassa::{
    self, FailRedirect, HashAlgorithm, ResultCallback, RobokassaConfig, RobokassaError, amount_in_kopecks,
};

fn config(algorithm: HashAlgorithm) -> RobokassaConfig {
    RobokassaConfig {
        merchant_login: "fuzz-shop".to_owned(),
        password1: "fuzz-password-one".to_owned(),
        password2: "fuzz-password-two".to_owned(),
        is_test: true,
        algorithm,
        base_url: robokassa::DEFAULT_BASE_URL.to_owned(),
        culture: None,
    }
}

/// The signature as Robokassa's documentation describes it: an oracle
/// written apart from the crate's own.
fn documented_signature(algorithm: HashAlgorithm, callback: &ResultCallback, password: &str) -> String {
    let mut base = format!("{}:{}:{password}", callback.out_sum_raw, callback.inv_id);
    for (key, value) in &callback.shp {
        base.push_str(&format!(":{key}={value}"));
    }
    robokassa::sign(algorithm, &base)
}

fuzz_target!(|data: &[u8]| {
    // The handler refuses a body that is not UTF-8 before parsing.
    let Ok(encoded) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(mut callback) = ResultCallback::parse(encoded) {
        assert!((1..=robokassa::MAX_INV_ID).contains(&callback.inv_id));
        assert!(!callback.signature.is_empty());
        // The debug form (what a log would show) does not depend on the
        // signature: it is redacted.
        let shown = format!("{callback:?}");
        let mut other = callback.clone();
        other.signature = "another".to_owned();
        assert_eq!(shown, format!("{other:?}"));
        match amount_in_kopecks(callback.out_sum) {
            Some(kopecks) => {
                assert!(kopecks >= 0);
                assert!(callback.check_amount(kopecks).is_ok());
                assert!(callback.check_amount(kopecks.wrapping_add(1)).is_err());
            }
            None => assert!(callback.check_amount(0).is_err()),
        }
        let algorithm = HashAlgorithm::ALL[usize::from(data[0]) % HashAlgorithm::ALL.len()];
        let config = config(algorithm);
        let guessed = callback.signature.clone();
        let genuine = documented_signature(algorithm, &callback, &config.password2);
        if !guessed.eq_ignore_ascii_case(&genuine) {
            assert!(matches!(
                robokassa::verify_result(&config, &callback),
                Err(RobokassaError::BadSignature)
            ));
        }
        callback.signature = genuine;
        assert!(robokassa::verify_result(&config, &callback).is_ok());
        assert!(robokassa::verify_success(&config, &callback).is_err());
        callback.signature = documented_signature(algorithm, &callback, &config.password1);
        assert!(robokassa::verify_success(&config, &callback).is_ok());
        assert!(robokassa::verify_result(&config, &callback).is_err());
    }
    if let Ok(redirect) = FailRedirect::parse(encoded) {
        assert!((1..=robokassa::MAX_INV_ID).contains(&redirect.inv_id));
    }
});
