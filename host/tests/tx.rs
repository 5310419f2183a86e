//! Signed state-patch and governance transactions: the wire format,
//! signatures, and every stateless rule with its code.

use ed25519_dalek::{Signer, SigningKey};
use sha2::{Digest, Sha256};

use statesnap::protocol::account_key;
use statesnap::protocol::tx::{
    code, decode_and_verify, Action, Op, Proposal, SignedTx, Tx, TxBody, TxError, MAX_GOV_TX_BYTES, MAX_OPS,
    MAX_PLUGIN_BYTES, MAX_TX_BYTES, SIGN_DOMAIN,
};

const CHAIN: &str = "statesnap-test";

fn key() -> SigningKey {
    account_key::derive(42, 0)
}

fn set(key: &str, stored: &str) -> Op {
    Op::Set {
        key: key.into(),
        stored: stored.into(),
    }
}

fn del(key: &str) -> Op {
    Op::Delete { key: key.into() }
}

fn body(ops: Vec<Op>) -> TxBody {
    TxBody {
        chain_id: CHAIN.into(),
        account: key().verifying_key().to_bytes(),
        nonce: 7,
        action: Action::Patch(ops),
    }
}

fn signed(ops: Vec<Op>) -> Tx {
    Tx::sign(body(ops), &key()).unwrap()
}

/// Signs the stateless checks' verdict on a patch: its code, 0 when valid.
fn verdict(ops: Vec<Op>) -> u32 {
    let tx = signed(ops);
    let decoded = decode_and_verify(tx.bytes()).and_then(|t| t.validate(CHAIN).map(|()| t));
    decoded.map_or_else(|e| e.code(), |_| code::OK)
}

fn transfer() -> Vec<Op> {
    vec![
        set("currency.balances:alice", r#"{"__fixed__":"12.5"}"#),
        set("currency.balances:bob", r#"{"__fixed__":"0.5"}"#),
        del("con_token_1.allowances:alice:bob"),
    ]
}

// ---- the format --------------------------------------------------------------------------------

#[test]
fn sign_encode_decode_round_trip() {
    let tx = signed(transfer());
    let back = decode_and_verify(tx.bytes()).unwrap();
    assert_eq!(back, tx);
    assert_eq!(back.body(), &body(transfer()));
    assert_eq!(back.nonce(), 7);
    assert_eq!(back.chain_id(), CHAIN);
    assert_eq!(back.account_hex(), hex::encode(key().verifying_key().to_bytes()));
    assert_eq!(back.hash(), <[u8; 32]>::from(Sha256::digest(tx.bytes())));
    assert_eq!(back.validate(CHAIN), Ok(()));
    // A different nonce is a different transaction with a different hash.
    let mut other = body(transfer());
    other.nonce = 8;
    assert_ne!(Tx::sign(other, &key()).unwrap().hash(), tx.hash());
}

#[test]
fn every_stateless_rule_is_refused_with_its_code() {
    assert_eq!(verdict(transfer()), code::OK);
    assert_eq!(verdict(vec![del("a.b")]), code::OK);

    // chain id
    let tx = signed(transfer());
    let err = tx.validate("other-chain").unwrap_err();
    assert_eq!(err.code(), code::WRONG_CHAIN_ID);
    assert!(err.to_string().contains("other-chain"), "{err}");

    // empty, too many ops, too many bytes
    assert_eq!(verdict(vec![]), code::EMPTY);
    let many: Vec<Op> = (0..=MAX_OPS).map(|i| set(&format!("c.k:{i}"), "1")).collect();
    assert_eq!(verdict(many[..MAX_OPS].to_vec()), code::OK);
    assert_eq!(verdict(many), code::TOO_LARGE);
    let big = "\"".to_string() + &"x".repeat(30_000) + "\"";
    let huge = vec![set("c.a", &big), set("c.b", &big), set("c.c", &big)];
    let tx = signed(huge);
    assert!(tx.bytes().len() > MAX_TX_BYTES);
    assert_eq!(tx.validate(CHAIN).unwrap_err().code(), code::TOO_LARGE);
    // Decoding allows governance-sized transactions; validation limits patches.
    let decoded = decode_and_verify(tx.bytes()).unwrap();
    assert_eq!(decoded.validate(CHAIN).unwrap_err().code(), code::TOO_LARGE);
    assert_eq!(
        decode_and_verify(&vec![0u8; MAX_GOV_TX_BYTES + 1]).unwrap_err().code(),
        code::TOO_LARGE
    );

    // keys
    assert_eq!(
        verdict(vec![set("c.k", "1"), del("c.k")]),
        code::INVALID_KEY,
        "a key twice"
    );
    for reserved in [
        "__n.abcd",
        "__latest_block.height",
        "__",
        "statesnap.validators:x",
        "statesnap",
    ] {
        assert_eq!(verdict(vec![set(reserved, "1")]), code::RESERVED_KEY, "{reserved}");
        assert_eq!(verdict(vec![del(reserved)]), code::RESERVED_KEY, "{reserved}");
    }
    assert_eq!(
        verdict(vec![set("statesnapx.a", "1")]),
        code::OK,
        "only the exact file name is reserved"
    );
    assert_eq!(verdict(vec![set("c.a\0b", "1")]), code::INVALID_KEY, "NUL");
    let long_file = format!("{}.x", "f".repeat(256));
    assert_eq!(
        verdict(vec![set(&long_file, "1")]),
        code::INVALID_KEY,
        "file name over 255 bytes"
    );
    let long_key = format!("c.{}", "k".repeat(1023));
    assert_eq!(verdict(vec![set(&long_key[..1024], "1")]), code::OK);
    assert_eq!(
        verdict(vec![set(&long_key, "1")]),
        code::TOO_LARGE,
        "key over 1024 bytes"
    );

    // values
    assert_eq!(verdict(vec![set("c.k", "\"a\0b\"")]), code::INVALID_VALUE, "NUL");
    assert_eq!(
        verdict(vec![set("c.k", "null")]),
        code::INVALID_VALUE,
        "null: use Delete"
    );
    assert_eq!(verdict(vec![set("c.k", "{")]), code::INVALID_VALUE, "not JSON");
    assert_eq!(verdict(vec![set("c.k", "")]), code::INVALID_VALUE, "empty");
    assert_eq!(verdict(vec![set("c.k", r#"{"__delta__":[1,2]}"#)]), code::INVALID_VALUE);
    assert_eq!(verdict(vec![set("c.k", r#"{"__fixed__":"x"}"#)]), code::INVALID_VALUE);
    let at_limit = "\"".to_string() + &"v".repeat(32 * 1024 - 2) + "\"";
    assert_eq!(verdict(vec![set("c.k", &at_limit)]), code::OK);
    let over = "\"".to_string() + &"v".repeat(32 * 1024 - 1) + "\"";
    assert_eq!(verdict(vec![set("c.k", &over)]), code::TOO_LARGE, "value over 32 KiB");
    for ok in [
        r#"{"__time__":[2025,1,2,3,4,5,6]}"#,
        r#"{"__big_int__":"123456789012345678901234567890"}"#,
        r#"{"a":[1,2.5,"x"],"b":true}"#,
    ] {
        assert_eq!(verdict(vec![set("c.k", ok)]), code::OK, "{ok}");
    }
}

#[test]
fn codes_are_distinct_and_messages_say_what_to_do() {
    let errors = [
        TxError::Malformed("x".into()),
        TxError::BadSignature("x".into()),
        TxError::WrongChainId {
            expected: "a".into(),
            got: "b".into(),
        },
        TxError::BadNonce { expected: 2, got: 1 },
        TxError::ReservedKey {
            key: "__x".into(),
            reason: "r",
        },
        TxError::InvalidKey {
            key: "k".into(),
            reason: "r".into(),
        },
        TxError::InvalidValue {
            key: "k".into(),
            reason: "r".into(),
        },
        TxError::TooLarge {
            what: "w".into(),
            size: 2,
            max: 1,
        },
        TxError::Empty,
    ];
    let mut codes: Vec<u32> = errors.iter().map(|e| e.code()).collect();
    assert_eq!(codes, (1..=9).collect::<Vec<_>>());
    codes.dedup();
    assert_eq!(codes.len(), errors.len());
    let nonce = TxError::BadNonce { expected: 2, got: 1 }.to_string();
    assert!(nonce.contains("next nonce 2") && nonce.contains("nonce 2"), "{nonce}");
}

#[test]
fn a_flipped_byte_anywhere_is_refused() {
    let tx = signed(transfer());
    let wire = tx.bytes();
    for i in 0..wire.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut bad = wire.to_vec();
            bad[i] ^= mask;
            match decode_and_verify(&bad) {
                Ok(t) => panic!("byte {i} ^ {mask:#x} was accepted: {t:?}"),
                Err(e) => assert!(
                    [code::MALFORMED, code::BAD_SIGNATURE].contains(&e.code()),
                    "byte {i}: {e}"
                ),
            }
        }
    }
    for len in 0..wire.len() {
        assert_eq!(
            decode_and_verify(&wire[..len]).unwrap_err().code(),
            code::MALFORMED,
            "prefix {len}"
        );
    }
}

#[test]
fn non_canonical_encodings_are_refused() {
    let tx = signed(transfer());
    let wire = tx.bytes().to_vec();

    // trailing bytes
    let mut trailing = wire.clone();
    trailing.push(0);
    let err = decode_and_verify(&trailing).unwrap_err();
    assert_eq!(err.code(), code::MALFORMED);
    assert!(err.to_string().contains("after the end"), "{err}");

    // an overlong body length (same value, one more byte)
    let signed_tx: SignedTx = postcard::from_bytes(&wire).unwrap();
    let len = signed_tx.body.len();
    assert!(
        (128..16384).contains(&len),
        "the test assumes a two-byte length, body is {len}"
    );
    let mut overlong = vec![(len as u8 & 0x7f) | 0x80, ((len >> 7) as u8) | 0x80, 0];
    overlong.extend_from_slice(&signed_tx.body);
    overlong.extend_from_slice(&signed_tx.signature);
    let err = decode_and_verify(&overlong).unwrap_err();
    assert_eq!(err.code(), code::MALFORMED);
    assert!(err.to_string().contains("canonical"), "{err}");

    // a body with an overlong nonce, correctly signed: still refused
    let nonce_at = 1 + CHAIN.len() + 32;
    assert_eq!(signed_tx.body[nonce_at], 7);
    let mut body = signed_tx.body.clone();
    body.splice(nonce_at..=nonce_at, [0x87, 0x00]);
    assert_eq!(decode_and_verify(&resign(body)).unwrap_err().code(), code::MALFORMED);

    // a correctly signed body with trailing bytes
    let mut body = signed_tx.body.clone();
    body.push(0);
    assert_eq!(decode_and_verify(&resign(body)).unwrap_err().code(), code::MALFORMED);

    // the unmodified body re-signed the same way is accepted (the helper is sound)
    assert!(decode_and_verify(&resign(signed_tx.body)).is_ok());
}

/// Wire bytes of `body` signed by `key()` as the format says, without checks.
fn resign(body: Vec<u8>) -> Vec<u8> {
    let mut msg = SIGN_DOMAIN.to_vec();
    msg.extend_from_slice(&body);
    let signature = key().sign(&msg).to_bytes();
    SignedTx { body, signature }.to_bytes()
}

#[test]
fn signatures_by_other_keys_or_weak_keys_are_refused() {
    let tx = signed(transfer());
    let mut signed_tx: SignedTx = postcard::from_bytes(tx.bytes()).unwrap();
    let mut msg = SIGN_DOMAIN.to_vec();
    msg.extend_from_slice(&signed_tx.body);
    signed_tx.signature = account_key::derive(42, 1).sign(&msg).to_bytes();
    assert_eq!(
        decode_and_verify(&signed_tx.to_bytes()).unwrap_err().code(),
        code::BAD_SIGNATURE
    );
    // Signed without the domain prefix.
    let signed_tx = SignedTx {
        signature: key().sign(&signed_tx.body).to_bytes(),
        body: signed_tx.body,
    };
    assert_eq!(
        decode_and_verify(&signed_tx.to_bytes()).unwrap_err().code(),
        code::BAD_SIGNATURE
    );
    // The identity point as the account (a weak key): strict verification refuses it.
    let mut weak = body(transfer());
    weak.account = [0; 32];
    weak.account[0] = 1;
    let body_bytes = postcard::to_stdvec(&weak).unwrap();
    let forged = SignedTx {
        body: body_bytes,
        signature: [0; 64],
    };
    assert_eq!(
        decode_and_verify(&forged.to_bytes()).unwrap_err().code(),
        code::BAD_SIGNATURE
    );
    // Signing a body for another account is refused up front.
    assert_eq!(Tx::sign(weak, &key()).unwrap_err().code(), code::BAD_SIGNATURE);
}

// ---- governance ---------------------------------------------------------------------------------

#[test]
fn governance_transactions_round_trip_and_follow_their_stateless_rules() {
    let sign = |action: Action| {
        let mut b = body(vec![]);
        b.action = action;
        Tx::sign(b, &key()).unwrap()
    };
    let proposal = |plugin: Vec<u8>, activation_delay: u64, expires_after: u64| {
        Action::Propose(Proposal::new(3, &plugin, activation_delay, expires_after))
    };
    // Random bytes do not compress: the transaction is larger than any patch.
    let mut noise = vec![0u8; 300_000];
    let mut x = 1u64;
    for b in noise.iter_mut() {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        *b = (x >> 56) as u8;
    }
    let ok = sign(proposal(noise.clone(), 10, 100));
    assert!(ok.bytes().len() > MAX_TX_BYTES, "a plugin is larger than any patch");
    let back = decode_and_verify(ok.bytes()).unwrap();
    assert_eq!(back.body(), ok.body());
    back.validate(CHAIN).unwrap();
    let Action::Propose(p) = back.action() else { panic!() };
    assert_eq!(p.plugin().unwrap(), noise, "the plugin survives compression");
    let vote = sign(Action::Vote(4));
    assert_eq!(decode_and_verify(vote.bytes()).unwrap().action(), &Action::Vote(4));
    vote.validate(CHAIN).unwrap();

    let code_of = |a: Action| sign(a).validate(CHAIN).unwrap_err().code();
    // What the plugin unpacks to is checked where the node unpacks it, once
    // per transaction (`execute::prepare`), not by `validate`.
    let unpacked_code_of = |a: Action| {
        let tx = sign(a);
        tx.validate(CHAIN).unwrap();
        let Action::Propose(p) = tx.action() else { panic!() };
        p.plugin().unwrap_err().code()
    };
    assert_eq!(unpacked_code_of(proposal(vec![], 10, 100)), code::PLUGIN_REFUSED);
    // A compressed bomb: small on the wire, over the limit unpacked.
    assert_eq!(
        unpacked_code_of(proposal(vec![1; MAX_PLUGIN_BYTES + 1], 10, 100)),
        code::TOO_LARGE
    );
    // Too large on the wire.
    let mut big = noise.clone();
    big.extend(noise.iter().map(|b| b ^ 0x5a));
    big.extend(noise.iter().map(|b| b.rotate_left(3)));
    assert_eq!(code_of(proposal(big, 10, 100)), code::TOO_LARGE);
    let junk = Action::Propose(Proposal {
        format: 3,
        plugin_gzip: vec![1, 2, 3],
        activation_delay: 10,
        expires_after: 100,
    });
    assert_eq!(unpacked_code_of(junk), code::MALFORMED);
    assert_eq!(code_of(proposal(vec![1; 10], 0, 100)), code::GOVERNANCE);
    assert_eq!(code_of(proposal(vec![1; 10], 10, 0)), code::GOVERNANCE);
    assert_eq!(code_of(proposal(vec![1; 10], 10, u64::MAX)), code::GOVERNANCE);
}
