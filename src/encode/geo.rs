//! GEOMETRY/GEOGRAPHY values (EWKB or ISO WKB) as GeoJSON geometry objects,
//! for `mapping.geometry = "geojson"`: what MongoDB's `2dsphere` indexes
//! read. The SRID is dropped (GeoJSON's coordinates are longitude and
//! latitude); Z is kept as a third coordinate; M has no GeoJSON form and is
//! refused, as are curves and other types outside the OGC simple features.

use serde_json::{json, Value};

const SRID_FLAG: u32 = 0x2000_0000;
const Z_FLAG: u32 = 0x8000_0000;
const M_FLAG: u32 = 0x4000_0000;

/// The GeoJSON text of one EWKB/WKB value.
pub fn ewkb_to_geojson(bytes: &[u8]) -> Result<String, String> {
    let mut r = Reader { b: bytes, le: true };
    let g = r.geometry()?;
    if !r.b.is_empty() {
        return Err("malformed geometry (bytes after the value)".into());
    }
    Ok(g.to_string())
}

struct Reader<'a> {
    b: &'a [u8],
    le: bool,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let (head, rest) = self
            .b
            .split_first_chunk::<N>()
            .ok_or("malformed geometry (too short)")?;
        self.b = rest;
        Ok(*head)
    }

    fn u32(&mut self) -> Result<u32, String> {
        let v = self.take::<4>()?;
        Ok(if self.le {
            u32::from_le_bytes(v)
        } else {
            u32::from_be_bytes(v)
        })
    }

    fn f64(&mut self) -> Result<f64, String> {
        let v = self.take::<8>()?;
        Ok(if self.le {
            f64::from_le_bytes(v)
        } else {
            f64::from_be_bytes(v)
        })
    }

    fn count(&mut self) -> Result<usize, String> {
        let n = self.u32()? as usize;
        // Every element takes at least 8 bytes: a count past that is garbage.
        if n > self.b.len() / 8 + 1 {
            return Err("malformed geometry (count beyond the value)".into());
        }
        Ok(n)
    }

    fn position(&mut self, dims: usize) -> Result<Value, String> {
        let mut p = Vec::with_capacity(dims);
        for _ in 0..dims {
            p.push(self.f64()?);
        }
        if p.iter().all(|x| x.is_nan()) {
            return Ok(json!([]));
        }
        if p.iter().any(|x| !x.is_finite()) {
            return Err("geometry coordinate is not a finite number".into());
        }
        Ok(json!(p))
    }

    fn positions(&mut self, dims: usize) -> Result<Value, String> {
        let n = self.count()?;
        (0..n)
            .map(|_| self.position(dims))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array)
    }

    /// One geometry with its own byte order and type header.
    fn geometry(&mut self) -> Result<Value, String> {
        self.le = match self.take::<1>()?[0] {
            0 => false,
            1 => true,
            _ => return Err("malformed geometry (byte order)".into()),
        };
        let raw = self.u32()?;
        let (mut z, mut m) = (raw & Z_FLAG != 0, raw & M_FLAG != 0);
        let mut kind = raw & 0x0fff_ffff;
        // ISO WKB: 1000s carry Z, 2000s M, 3000s both.
        match kind / 1000 {
            1 => z = true,
            2 => m = true,
            3 => (z, m) = (true, true),
            _ => {}
        }
        kind %= 1000;
        if raw & SRID_FLAG != 0 {
            self.u32()?;
        }
        if m {
            return Err(
                "geometry with M values has no GeoJSON form; use mapping.geometry = \"ewkb\""
                    .into(),
            );
        }
        let dims = if z { 3 } else { 2 };
        let (name, coordinates) = match kind {
            1 => ("Point", self.position(dims)?),
            2 => ("LineString", self.positions(dims)?),
            3 => ("Polygon", self.rings(dims)?),
            4..=6 => {
                let n = self.count()?;
                let parts = (0..n)
                    .map(|_| self.geometry().map(|g| g["coordinates"].clone()))
                    .collect::<Result<Vec<_>, _>>()?;
                let name = ["MultiPoint", "MultiLineString", "MultiPolygon"][kind as usize - 4];
                (name, Value::Array(parts))
            }
            7 => {
                let n = self.count()?;
                let parts = (0..n)
                    .map(|_| self.geometry())
                    .collect::<Result<Vec<_>, _>>()?;
                return Ok(json!({"type": "GeometryCollection", "geometries": parts}));
            }
            other => {
                return Err(format!(
                    "geometry type {other} has no GeoJSON form; use mapping.geometry = \"ewkb\""
                ))
            }
        };
        Ok(json!({"type": name, "coordinates": coordinates}))
    }

    fn rings(&mut self, dims: usize) -> Result<Value, String> {
        let n = self.count()?;
        (0..n)
            .map(|_| self.positions(dims))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len() / 2)
            .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
            .collect()
    }

    fn geo(s: &str) -> Value {
        serde_json::from_str(&ewkb_to_geojson(&hex(s)).unwrap()).unwrap()
    }

    #[test]
    fn points_lines_polygons() {
        // POINT(1 2), little-endian, no SRID.
        assert_eq!(
            geo("0101000000000000000000F03F0000000000000040"),
            json!({"type": "Point", "coordinates": [1.0, 2.0]})
        );
        // The same with SRID 4326 (EWKB).
        assert_eq!(
            geo("0101000020E6100000000000000000F03F0000000000000040"),
            json!({"type": "Point", "coordinates": [1.0, 2.0]})
        );
        // Big-endian.
        assert_eq!(
            geo("00000000013FF00000000000004000000000000000"),
            json!({"type": "Point", "coordinates": [1.0, 2.0]})
        );
        // A 10-point line string from the Redshift Python driver's fixtures.
        let line = geo("01020000000A000000000000000000F03F000000000000004000000000000008400000000000001040000000000000144000000000000018400000000000001C40000000000000204000000000000022400000000000002440000000000000264000000000000028400000000000002A400000000000002C400000000000002E4000000000000030400000000000003140000000000000324000000000000033400000000000003440");
        assert_eq!(line["type"], "LineString");
        assert_eq!(line["coordinates"][9], json!([19.0, 20.0]));
        // Its polygon with SRID 4326: a unit square.
        let poly = geo("0103000020E61000000100000005000000000000000000000000000000000000000000000000000000000000000000F03F000000000000F03F000000000000F03F000000000000F03F000000000000000000000000000000000000000000000000");
        assert_eq!(
            poly,
            json!({"type": "Polygon", "coordinates": [[[0.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 0.0], [0.0, 0.0]]]})
        );
    }

    #[test]
    fn multi_z_and_refusals() {
        // MULTIPOINT Z ((1 2 3)) in ISO WKB (type 1004, point 1001).
        let mut v = vec![1u8];
        v.extend(1004u32.to_le_bytes());
        v.extend(1u32.to_le_bytes());
        v.push(1);
        v.extend(1001u32.to_le_bytes());
        for x in [1.0f64, 2.0, 3.0] {
            v.extend(x.to_le_bytes());
        }
        let g: Value = serde_json::from_str(&ewkb_to_geojson(&v).unwrap()).unwrap();
        assert_eq!(
            g,
            json!({"type": "MultiPoint", "coordinates": [[1.0, 2.0, 3.0]]})
        );
        // POINT M: refused with the setting to change.
        let mut m = vec![1u8];
        m.extend((1u32 | M_FLAG).to_le_bytes());
        m.extend([0u8; 24]);
        let err = ewkb_to_geojson(&m).unwrap_err();
        assert!(err.contains("mapping.geometry"), "{err}");
        // Truncated and absurd counts are errors, not panics.
        assert!(ewkb_to_geojson(&hex("0102000000FFFFFFFF")).is_err());
        assert!(ewkb_to_geojson(&hex("01010000")).is_err());
        // POINT EMPTY is NaN coordinates: an empty position.
        let mut e = vec![1u8];
        e.extend(1u32.to_le_bytes());
        e.extend(f64::NAN.to_le_bytes());
        e.extend(f64::NAN.to_le_bytes());
        assert_eq!(
            ewkb_to_geojson(&e).unwrap(),
            json!({"type": "Point", "coordinates": []}).to_string()
        );
    }
}
