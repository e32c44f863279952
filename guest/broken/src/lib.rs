//! A well-formed component that is not a surfaces guest: it exports `init`
//! but no `handle`. A host must refuse to swap it in.

wit_bindgen::generate!({
    inline: r#"
        package surfaces:broken;
        world bot {
            export init: func() -> string;
        }
    "#,
});

struct Broken;

impl Guest for Broken {
    fn init() -> String {
        "broken".to_string()
    }
}

export!(Broken);
