//! The answer to the cloud's anti-entropy question (`kubeedge_model::protocol::inventory`):
//! name, uid and resourceVersion of every object of the asked types in the `meta` table,
//! read in the DB thread (after every write queued before it is committed), without loading
//! the objects themselves.

use kubeedge_metastore::{SqlValue, Store};
use kubeedge_model::ResourcePath;
use kubeedge_model::constants::resource_type;
use kubeedge_model::protocol::inventory::{Inventory, MAX_ITEMS, Request};
use tracing::warn;

/// The types the cloud owns and may ask about.
const ANSWERED: [&str; 5] = [
    resource_type::POD,
    resource_type::CONFIGMAP,
    resource_type::SECRET,
    resource_type::DEVICE,
    resource_type::DEVICE_MODEL,
];

/// uid and resourceVersion straight from the stored JSON (`NULL` for a value that is not JSON).
const SQL: &str = "SELECT key, \
     CASE WHEN json_valid(value) THEN json_extract(value, '$.metadata.uid') END, \
     CASE WHEN json_valid(value) THEN json_extract(value, '$.metadata.resourceVersion') END \
     FROM meta WHERE type = ?1";

/// Everything stored of the types `request` asks for (other types are not answered), at most
/// [`MAX_ITEMS`] objects (then `truncated`). Rows without a uid are left out: a delete must
/// name what it removes.
pub async fn collect(store: &Store, request: &Request) -> Result<Inventory, kubeedge_metastore::Error> {
    let mut inv = Inventory::default();
    let mut count = 0;
    for ty in ANSWERED.iter().filter(|t| request.types.iter().any(|r| r == *t)) {
        inv.types.push((*ty).to_owned());
        for row in store.query(SQL, vec![SqlValue::from(*ty)]).await? {
            let [key, uid, rv] = row.as_slice() else { continue };
            let Ok(path) = ResourcePath::parse(&key.text()) else { continue };
            let (Some(ns), Some(name), uid) = (path.namespace(), path.name.as_deref(), uid.text()) else { continue };
            if uid.is_empty() {
                continue;
            }
            if count >= MAX_ITEMS {
                warn!(max = MAX_ITEMS, "The inventory is cut at its largest size.");
                inv.truncated = true;
                return Ok(inv);
            }
            count += 1;
            inv.push(ty, ns, (name.to_owned(), uid, u64::try_from(rv.integer()).unwrap_or(0)));
        }
    }
    Ok(inv)
}
